"""Read back an offline W&B run (``run-<id>.wandb``) without the network.

The file is W&B's LevelDB-style transaction log: a 7-byte header (``:W&B``, magic, version),
then 32 KiB blocks of records, each with a 7-byte header (crc32, little-endian length, type
FULL/FIRST/MIDDLE/LAST) around a protobuf ``Record``. wandb ships no public reader in the
installed version, so the tests carry this small one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def iter_records(path: Path):
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        if kind in (FULL, LAST):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending + chunk)
            pending = b""
            yield rec
        elif kind in (FIRST, MIDDLE):
            pending += chunk


def read_offline_run(run_dir: Path) -> dict[str, Any]:
    """The records of an offline run directory.

    Returns:
        {"history": [ {key: value} ...], "summary": {...}, "config": {...}}.
    """
    wandb_file = next(run_dir.glob("run-*.wandb"))
    out: dict[str, Any] = {"history": [], "summary": {}, "config": {}}
    for rec in iter_records(wandb_file):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            out["history"].append(
                {
                    (i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                    for i in rec.history.item
                }
            )
        elif kind == "summary":
            out["summary"].update(
                {
                    (i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                    for i in rec.summary.update
                }
            )
        elif kind == "config":
            out["config"].update(
                {
                    (i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                    for i in rec.config.update
                }
            )
    return out
