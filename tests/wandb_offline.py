"""Read an offline W&B run (`run-<id>.wandb`) back from disk, without the W&B service.

The file is a 7-byte header (`:W&B`, 2-byte magic, 1-byte version) followed by LevelDB-log records
in 32 KiB blocks (7-byte record header: crc32, little-endian uint16 length, type 1 full / 2 first /
3 middle / 4 last); each assembled record is a `wandb_internal_pb2.Record` protobuf.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADER_SIZE = 7
BLOCK_SIZE = 32 * 1024
RECORD_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def iter_payloads(path: str | Path) -> Iterator[bytes]:
    """The raw protobuf payloads of a `.wandb` file, in order."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    pos, pending = HEADER_SIZE, b""
    while pos + RECORD_HEADER <= len(data):
        left_in_block = BLOCK_SIZE - (pos % BLOCK_SIZE)
        if left_in_block < RECORD_HEADER:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + RECORD_HEADER])
        pos += RECORD_HEADER
        chunk = data[pos : pos + length]
        pos += length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""
        elif kind == 0 and length == 0:  # zero padding at the end of a block
            pos += BLOCK_SIZE - (pos % BLOCK_SIZE) if pos % BLOCK_SIZE else 0


@dataclass
class OfflineRun:
    """What an offline run recorded: run fields, config, history rows and summary."""

    run: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)


def _items(items) -> dict[str, Any]:
    out = {}
    for item in items:
        key = item.key or "/".join(item.nested_key)
        try:
            out[key] = json.loads(item.value_json)
        except (json.JSONDecodeError, TypeError):
            out[key] = item.value_json
    return out


def read_offline_run(path: str | Path) -> OfflineRun:
    """Parse `run-<id>.wandb` (a file, or an `offline-run-*` directory holding one)."""
    from wandb.proto import wandb_internal_pb2

    path = Path(path)
    if path.is_dir():
        path = next(path.glob("*.wandb"))
    result = OfflineRun()
    for payload in iter_payloads(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            result.run = {
                "id": r.run_id,
                "project": r.project,
                "group": r.run_group,
                "job_type": r.job_type,
                "name": r.display_name,
                "tags": list(r.tags),
            }
            result.config.update(_items(r.config.update))
        elif kind == "config":
            result.config.update(_items(record.config.update))
        elif kind == "history":
            result.history.append(_items(record.history.item))
        elif kind == "summary":
            result.summary.update(_items(record.summary.update))
        elif kind == "artifact":
            a = record.artifact
            files = [entry.path for entry in a.manifest.contents]
            result.artifacts.append({"name": a.name, "type": a.type, "files": files})
    return result
