"""Writing what the insight commands produce: PNG figures, markdown / CSV / JSON tables, and
the same figures and tables to W&B when a W&B run is active.

Every file goes to a temp path first and is renamed into place (``imgcls.utils``), so a
crash never leaves half a figure where a good one was.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgcls.utils import atomic_path, atomic_write_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "Table",
    "log_to_wandb",
    "markdown_table",
    "save_figure",
    "wandb_session",
    "write_csv",
    "write_json",
    "write_table",
]

Table = tuple[Sequence[str], Sequence[Sequence[Any]]]  # (columns, rows)


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Save ``fig`` as a PNG of exactly figsize × dpi pixels (no tight crop), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi)
    return path


def _cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


_NUMBER_CHARS = re.compile(r"[0-9.,%±/+\-–*~≈× ]|\b[skMG]\b")


def _numeric(v: Any) -> bool:
    """A cell that reads as a number or is empty / a dash.

    Numbers as the tables write them: 12.3, 1,024, 97.0 / 95.1, 4.2 s, 1.20 M.
    """
    s = str(v).strip()
    if s in ("", "-", "–", "n/a", "?"):
        return True
    return any(ch.isdigit() for ch in s) and _NUMBER_CHARS.sub("", s) == ""


def markdown_table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None
) -> str:
    """A GitHub markdown table.

    ``align`` has one ``l`` / ``r`` per column; by default a column of numbers is right-aligned.
    """
    if align is None:
        align = "".join(
            "r" if i and rows and all(_numeric(r[i]) for r in rows) else "l"
            for i in range(len(columns))
        )
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(
    base: str | os.PathLike[str],
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    title: str | None = None,
) -> tuple[Path, Path]:
    """Write ``base``.md (markdown, optional title) and ``base``.csv; return both paths."""
    base = Path(base)
    md = base.with_suffix(".md")
    atomic_write_text(md, (f"# {title}\n\n" if title else "") + markdown_table(columns, rows))
    return md, write_csv(base.with_suffix(".csv"), columns, rows)


def write_csv(
    path: str | os.PathLike[str], columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> Path:
    path = Path(path)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    return path


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    path = Path(path)
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")
    return path


def log_to_wandb(
    prefix: str,
    figures: Mapping[str, str | os.PathLike[str]] | None = None,
    tables: Mapping[str, Table] | None = None,
) -> bool:
    """Log PNGs and tables under ``prefix/`` to the active W&B run; return whether one was active.

    Nothing is imported when no W&B run exists: a run can only be active if ``wandb`` was
    imported by whoever started it.
    """
    wandb = sys.modules.get("wandb")
    if wandb is None or getattr(wandb, "run", None) is None:
        return False
    payload: dict[str, Any] = {}
    for name, path in (figures or {}).items():
        payload[f"{prefix}/{name}"] = wandb.Image(str(path))
    for name, (columns, rows) in (tables or {}).items():
        payload[f"{prefix}/{name}"] = wandb.Table(
            columns=list(columns), data=[list(r) for r in rows]
        )
    if payload:
        wandb.run.log(payload)
    return True


@contextlib.contextmanager
def wandb_session(project: str | None, job_type: str, config: dict[str, Any]) -> Iterator[None]:
    """A W&B run for the duration of a command when ``--wandb PROJECT`` is given; else nothing."""
    if not project:
        yield
        return
    import wandb

    run = wandb.init(project=project, job_type=job_type, config=config)
    try:
        yield
    finally:
        run.finish()
