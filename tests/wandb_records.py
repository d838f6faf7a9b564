"""Read what wandb wrote for an offline run: the records of its `.wandb` file (a test helper).

The file is wandb's append-only log: a 7-byte file header, then 32 KiB blocks of chunks, each with a 7-byte
header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) and a protobuf `Record` as payload. Read
only after the run finished (the writing process ended), when the file is complete.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 32768
CHUNK_HEADER = 7
FILE_HEADER = 7


def records(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    pos, pending = FILE_HEADER, b""
    while pos + CHUNK_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:  # block padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


@dataclass
class OfflineRun:
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    name: str = ""
    history_keys: set[str] = field(default_factory=set)
    summary_keys: set[str] = field(default_factory=set)


def read_run(path: Path) -> OfflineRun:
    from wandb.proto import wandb_internal_pb2 as pb

    run = OfflineRun()
    for raw in records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.group, run.job_type = record.run.run_group, record.run.job_type
            run.tags, run.name = list(record.run.tags), record.run.display_name
        elif kind == "history":
            run.history_keys |= {item.key or "/".join(item.nested_key) for item in record.history.item}
        elif kind == "summary":
            run.summary_keys |= {item.key or "/".join(item.nested_key) for item in record.summary.update}
    return run


def offline_runs(root: Path) -> list[OfflineRun]:
    return [read_run(p) for p in sorted(root.rglob("offline-run-*/*.wandb"))]
