"""The draw-a-digit page as a static site that runs the exported model in the browser.

``build_site(model, out)`` writes::

    out/index.html              the page of ``imgcls serve``, told to run the model itself
    out/static/app.js ...       the page's scripts and style (imgcls/deploy/web, one code base)
    out/static/ort.wasm.min.js  onnxruntime-web's WebAssembly build (npm, pinned, sha256)
    out/static/ort-wasm-simd-threaded.{mjs,wasm}
    out/model.onnx              the export's model
    out/model.features.onnx     its feature-map model, when the export has one
    out/compare.onnx            the model shown beside it (``compare``), when given
    out/weights.bin             the model's learned weights (float32), for the layer panel
    out/epochs/N/...            with ``epochs`` (``imgcls page --epochs``): each snapshot's
                                feature-map model and weights, for the epoch slider
    out/metadata.json           the export's metadata, no local paths, plus what the page needs
    out/.imgcls-site            marks the folder as a site imgcls built, and lists its files

Any static host serves it (GitHub Pages, a course website, ``python -m http.server``); it
asks the network for nothing but its own files. The site is built in a staged folder and
swapped in whole (``imgcls.staging``): a failed build leaves a previous site as it was. An
``out`` that is a non-empty folder of something else is refused, and so is the current folder
(or one that holds it: the swap would leave the shell in a removed folder); a symlink is
followed, so the site goes into the folder it points to and the link stays.

A rebuild replaces only the files imgcls wrote: those the previous build listed in
``.imgcls-site``. Every other file in ``out`` (a ``CNAME``, ``.nojekyll``, ``.git/``, your own
pages) is carried into the new site, hard-linked (copied where a link cannot be made), before
the swap. A file of yours where the new site writes one is refused before anything changes.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imgcls.deploy import npm
from imgcls.deploy.classifier import read_metadata
from imgcls.deploy.framing import framing_for
from imgcls.deploy.images import MAX_PIXELS
from imgcls.deploy.metadata import features_answer_is_the_models, without_local_paths
from imgcls.deploy.teach import (
    WEIGHTS_FILE,
    compare_metadata,
    epoch_snapshots,
    shift_figures,
    weights_blob,
)
from imgcls.errors import ConfigError, DiskFullError, ImgclsError
from imgcls.staging import MARKER, holds_cwd, staged_folder
from imgcls.utils import sha256_file

__all__ = ["FEATURES_FILE", "SITE_MARKER", "WEB_DIR", "build_site", "check_out"]

WEB_DIR = Path(__file__).with_name("web")
FEATURES_FILE = "model.features.onnx"
SITE_MARKER = ".imgcls-site"
PAGE_FILES = (
    "app.js",
    "framing.js",
    "runtime-browser.js",
    "teach.js",
    "layers.js",
    "playground.js",
    "epochs.js",
    "style.css",
)
COMPARE_FILE = "compare.onnx"
# The onnxruntime-web files the page loads: the WebAssembly build's loader, and the single-
# threaded SIMD module (a static host gives no cross-origin isolation, so no threads).
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
RUNTIME_SERVER = '<meta name="imgcls-runtime" content="server">'
RUNTIME_BROWSER = '<meta name="imgcls-runtime" content="browser">'


# What a site written before the manifest was added held: a rebuild of one replaces these and
# keeps everything else.
LEGACY_FILES = frozenset(
    {SITE_MARKER, "index.html", "metadata.json", "model.onnx", FEATURES_FILE}
    | {f"static/{name}" for name in PAGE_FILES + ORT_FILES}
)


def check_out(out: Path) -> None:
    """Refuse an ``out`` the site cannot replace (see ``build_site``), before anything is
    written: callers that do slow work first (``imgcls page --epochs``) ask early."""
    real = Path(os.path.realpath(out))
    if real.is_symlink():  # realpath stops at a link that loops
        raise ConfigError(f"--out {out}: a symlink that loops; give a folder for the site")
    if holds_cwd(real):
        raise ConfigError(
            f"--out {out}: {'is' if real == Path.cwd().resolve() else 'holds'} the current "
            "folder; the site replaces its folder whole, which would leave this shell in a "
            "removed folder: give a folder below it (--out site) or run from another folder "
            "(nothing was written)"
        )
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: a file is there; give a folder for the site")
    if out.is_dir() and any(out.iterdir()) and not (out / SITE_MARKER).is_file():
        raise ConfigError(
            f"--out {out}: a non-empty folder that is not a site imgcls built; give a new or "
            "empty folder (nothing was written)"
        )


def _previous_files(out: Path) -> frozenset[str]:
    """The files the build before wrote in ``out``: its marker's list; a marker without one
    (an older imgcls, or edited) counts as the fixed layout of the sites made before it."""
    try:
        listed = json.loads((out / SITE_MARKER).read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        listed = None
    if not isinstance(listed, list) or not all(isinstance(f, str) for f in listed):
        return LEGACY_FILES
    return frozenset(listed) | {SITE_MARKER}


def _carry_users_files(out: Path, staged: Path, ours: frozenset[str]) -> list[str]:
    """Put every file of ``out`` that imgcls did not write (not in ``ours``) at its place in
    ``staged``: hard-linked, so that a ``.git/`` costs no copy, or copied where a link cannot be
    made (another file system). Symlinks stay symlinks, empty folders are made, folders keep
    their modes. Returns the relative paths carried.

    Raises:
        ConfigError: a file of the user's lies where the new site writes one.
    """
    carried: list[str] = []
    folders: list[tuple[Path, Path]] = []
    for top, dirs, names in os.walk(out):
        here = Path(top)
        # A symlink to a folder is carried as a link, not walked into.
        links = [d for d in dirs if (here / d).is_symlink()]
        dirs[:] = [d for d in dirs if d not in links]
        for d in dirs:
            src, dst = here / d, staged / (here / d).relative_to(out)
            if (dst.exists() or dst.is_symlink()) and not dst.is_dir():
                raise _collision(out, src)
            dst.mkdir(exist_ok=True)
            folders.append((src, dst))
        for name in [*names, *links]:
            src = here / name
            rel = src.relative_to(out).as_posix()
            if rel in ours or rel == MARKER:
                continue
            dst = staged / rel
            if dst.exists() or dst.is_symlink():
                raise _collision(out, src)
            if src.is_symlink():
                os.symlink(os.readlink(src), dst)
            else:
                try:
                    os.link(src, dst, follow_symlinks=False)
                except OSError:
                    shutil.copy2(src, dst)
            carried.append(rel)
    for src, dst in reversed(folders):  # innermost first: a read-only folder is filled already
        shutil.copystat(src, dst, follow_symlinks=False)
    return carried


def _collision(out: Path, path: Path) -> ConfigError:
    return ConfigError(
        f"--out {out}: {path} is not a file imgcls wrote, and the new site writes one there; "
        "move or rename it and run again (nothing was changed)"
    )


def _public_metadata(model: Path, features: Path | None) -> dict[str, Any]:
    """The export's metadata as the page reads it: local paths left out, the framing and the
    pixel limit that ``imgcls infer`` would use, and the feature-map layers."""
    meta = without_local_paths(read_metadata(model))
    features_meta = read_metadata(features) if features else {}
    info: dict[str, Any] = {
        **meta,
        "model_id": sha256_file(model)[:12],
        "provider": "onnxruntime-web (WebAssembly)",
        "runtime": "browser",
        "framing": framing_for("auto", meta.get("dataset"), meta.get("framing")),
        "preprocess": "auto",
        "max_pixels": MAX_PIXELS,
        "features": features is not None,
        "feature_maps": features_meta.get("feature_maps") if features else None,
        # False for an ensemble: its feature model is one member, the answer is model.onnx's
        "features_answer": features is not None and features_answer_is_the_models(features_meta),
        "shift": shift_figures(model),
    }
    return info


def _features_beside(model: Path, log: Any) -> Path | None:
    beside = model.with_name(FEATURES_FILE)
    if not beside.is_file() or beside == model:
        return None
    of = read_metadata(beside).get("features_of")
    if of not in (None, sha256_file(model)):
        log(
            f"[imgcls page] warning: {beside} was exported from another model.onnx; the site "
            "shows no feature maps (re-export to get them back)"
        )
        return None
    return beside


def build_site(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    compare: str | os.PathLike[str] | None = None,
    epochs: Mapping[int, Path] | None = None,
    curves: Mapping[str, Any] | None = None,
    run_label: str | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Write the static site of ``model`` (an exported model.onnx) to ``out``.

    ``compare``: another export of the same data set, shown beside the model (the shift panel).
    ``epochs``: a run's snapshots, exported (epoch -> export folder), for the epoch slider,
    with the run's ``curves`` (``teach.run_curves``) and its name (``run_label``) beside them.

    Returns:
        A summary: the files written with their sizes, total bytes, whether it has feature
        maps, and ``kept``: the files of a previous site's folder that imgcls did not write,
        carried into the new one.

    Raises:
        ModelLoadError: ``model`` is not an imgcls export.
        ConfigError: ``out`` is a file, a non-empty folder that is not an imgcls site, the
            current folder (or holds it), or holds a file of the user's where the site writes;
            or ``compare`` takes other inputs or answers in other classes.
        NpmError: onnxruntime-web could not be fetched or failed its sha256 check.
    """
    model, out = Path(model), Path(out)
    check_out(out)
    ours = _previous_files(out) if (out / SITE_MARKER).is_file() else frozenset()
    features = _features_beside(model, log)
    info = _public_metadata(model, features)
    if compare is not None:
        compare = Path(compare)
        info["compare"] = compare_metadata(info, compare)
    weights, info["weights"] = weights_blob(model)
    snapshot_files: dict[str, Path | bytes] = {}
    if epochs:
        snapshot_files, entries = epoch_snapshots(epochs)
        info["epochs"] = {"run": run_label, "snapshots": entries, "curves": dict(curves or {})}
    blob = npm.package_tarball(npm.ONNXRUNTIME_WEB)

    def wrap(e: OSError) -> Exception:
        what = (
            f"--out {out}: the site could not be written ({e.strerror or e}); any previous site "
            "there is intact"
        )
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return DiskFullError(e.errno, what + ". Free some space and run the command again")
        return ConfigError(what)

    try:
        with staged_folder(out, wrap=wrap) as staged:
            static = staged / "static"
            static.mkdir()
            html = (WEB_DIR / "index.html").read_text(encoding="utf-8")
            if RUNTIME_SERVER not in html:
                raise ImgclsError(f"{WEB_DIR / 'index.html'} has no {RUNTIME_SERVER} to switch")
            (staged / "index.html").write_text(
                html.replace(RUNTIME_SERVER, RUNTIME_BROWSER), encoding="utf-8"
            )
            for name in PAGE_FILES:
                shutil.copyfile(WEB_DIR / name, static / name)
            npm.extract(blob, {f"package/dist/{name}": static / name for name in ORT_FILES})
            shutil.copyfile(model, staged / "model.onnx")
            if features is not None:
                shutil.copyfile(features, staged / FEATURES_FILE)
            if compare is not None:
                shutil.copyfile(compare, staged / COMPARE_FILE)
            (staged / WEIGHTS_FILE).write_bytes(weights)
            for name, source in snapshot_files.items():
                (staged / name).parent.mkdir(parents=True, exist_ok=True)
                if isinstance(source, bytes):
                    (staged / name).write_bytes(source)
                else:
                    shutil.copyfile(source, staged / name)
            (staged / "metadata.json").write_text(json.dumps(info, indent=2) + "\n")
            written = sorted(
                p.relative_to(staged).as_posix()
                for p in staged.rglob("*")
                if p.is_file() and p.name != MARKER
            )
            listed = sorted([*written, SITE_MARKER])  # what the next rebuild may replace
            marker = {"format": "imgcls-site/2", "model_id": info["model_id"], "files": listed}
            (staged / SITE_MARKER).write_text(json.dumps(marker, indent=1) + "\n")
            files = {name: (staged / name).stat().st_size for name in listed}
            kept = _carry_users_files(out, staged, ours) if ours else []
    except OSError as e:
        raise wrap(e) from e
    return {
        "out": str(out),
        "files": files,
        "bytes": sum(files.values()),
        "features": features is not None,
        "compare": info.get("compare", {}).get("net"),
        "epochs": [e["epoch"] for e in info.get("epochs", {}).get("snapshots", [])],
        "model_id": info["model_id"],
        "kept": kept,
    }
