"""Read what wandb wrote for an offline run: the records of its `.wandb` file (a test helper).

The file is wandb's append-only log: a 7-byte file header, then 32 KiB blocks of chunks, each with a 7-byte
header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) and a protobuf `Record` as payload.
wandb's service process writes it, possibly still after `run.finish()` returned or the run's process ended,
so `finished_run` reads it until its `exit` record (wandb's last word on a run) is there, or a deadline.
"""

from __future__ import annotations

import struct
import time
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
        if pos + CHUNK_HEADER + length > len(data):
            return  # a chunk still being written
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
    history: dict[str, str] = field(default_factory=dict)  # key -> its last value, as wandb's JSON text
    summary_keys: set[str] = field(default_factory=set)
    finished: bool = False  # the `exit` record is there: wandb wrote everything of the run


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
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                run.history_keys.add(key)
                run.history[key] = item.value_json
        elif kind == "summary":
            run.summary_keys |= {item.key or "/".join(item.nested_key) for item in record.summary.update}
        elif kind == "exit":
            run.finished = True
    return run


def finished_run(path: Path, timeout: float = 120.0) -> OfflineRun:
    """`read_run(path)` once wandb has written the run's `exit` record; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        run = read_run(path) if path.exists() else OfflineRun()
        if run.finished:
            return run
        if time.monotonic() > deadline:
            size = path.stat().st_size if path.exists() else "no"
            raise AssertionError(f"{path}: no exit record after {timeout:g} s ({size} bytes): {run}")
        time.sleep(0.1)


def offline_runs(root: Path, timeout: float = 120.0) -> list[OfflineRun]:
    return [finished_run(p, timeout) for p in sorted(root.rglob("offline-run-*/*.wandb"))]
