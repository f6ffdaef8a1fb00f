"""Read the records of an offline wandb run file (run-ID.wandb) without the wandb service.

The file is a LevelDB-style log: a 7-byte header (":W&B", magic, version), then 32 KiB blocks
of chunks, each with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768


def records(path: Path):
    data = Path(path).read_bytes()
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - (pos % BLOCK)
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left  # zero padding up to the next block
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def summary(path: Path) -> dict:
    """The run's final summary: the last value of each key, as wandb would show it."""
    out = {}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        items = (
            r.summary.update if kind == "summary" else r.history.item if kind == "history" else []
        )
        for item in items:
            out[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out
