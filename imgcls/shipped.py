"""The configs that ship with the package, by name: ``imgcls fit -c recipes/mnist_best``.

``configs/`` at the top of the repository is their one source. A wheel carries a copy inside
the package (``imgcls/configs/``, put there by the build: setup.py), and a checkout or an
editable install reads the top-level folder itself. ``-c NAME`` of ``fit``, ``validate``,
``test``, ``predict`` and ``tune`` goes through ``resolve_config``: an existing file wins, then
the shipped ``configs/NAME`` (with or without ``.yaml``, with or without a leading
``configs/``). A shipped config that names others by relative path (a tune file's
``configs: [../data/mnist.yaml]``) is resolved to its real path, so those still resolve.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from imgcls.errors import ConfigError

__all__ = [
    "CONFIG_FLAGS",
    "config_summaries",
    "configs_dir",
    "resolve_config",
    "resolve_config_args",
    "shipped_configs",
]

_PACKAGE = Path(__file__).resolve().parent
CONFIG_FLAGS = ("-c", "--config")
SUFFIX = ".yaml"


def configs_dir() -> Path:
    """The shipped configs: inside the package in a wheel, else the checkout's ``configs/``."""
    inside = _PACKAGE / "configs"
    return inside if inside.is_dir() else _PACKAGE.parent / "configs"


def shipped_configs() -> list[str]:
    """The shipped configs' names, relative to ``configs/`` and without ``.yaml``, sorted."""
    root = configs_dir()
    if not root.is_dir():
        return []
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*" + SUFFIX))


def _first_comment(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def config_summaries() -> list[tuple[str, str]]:
    """[(name, its first comment line)] for every shipped config."""
    root = configs_dir()
    return [(name, _first_comment(root / (name + SUFFIX))) for name in shipped_configs()]


def _is_inline(value: str) -> bool:
    """A YAML / JSON document given in place of a file (jsonargparse takes those too)."""
    return any(c in value for c in "{}\n:") and Path(value).suffix != SUFFIX


def resolve_config(value: str) -> str:
    """The file ``-c value`` means: ``value`` itself where it exists, else the shipped config.

    Raises:
        ConfigError: neither a file nor a shipped config; the message names the closest ones.
    """
    if Path(value).exists() or _is_inline(value):
        return value
    root = configs_dir()
    name = value.removeprefix("./").removeprefix("configs/")
    for candidate in (name, name + SUFFIX):
        path = root / candidate
        if path.is_file():
            return str(path)
    names = shipped_configs()
    close = difflib.get_close_matches(name.removesuffix(SUFFIX), names, n=3, cutoff=0.5)
    hint = f"closest shipped: {', '.join(close)}" if close else "imgcls configs lists the shipped"
    raise ConfigError(f"-c {value}: no such file, nor a config shipped with imgcls; {hint}")


def resolve_config_args(argv: list[str]) -> list[str]:
    """``argv`` with each ``-c`` / ``--config`` value resolved by ``resolve_config``."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return out + argv[i:]
        if arg in CONFIG_FLAGS and i + 1 < len(argv):
            out += [arg, resolve_config(argv[i + 1])]
            i += 2
            continue
        flag, eq, value = arg.partition("=")
        if eq and flag in CONFIG_FLAGS:
            arg = f"{flag}={resolve_config(value)}"
        out.append(arg)
        i += 1
    return out
