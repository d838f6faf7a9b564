"""Claims: which process is computing a cell or training a checkpoint, so that no two do the same work.

A claim is a lock file created with O_EXCL next to the work it guards, holding the owner's pid, host and
start time. The owner refreshes its modification time every `heartbeat` seconds; a claim is stale when its
owner is a dead process on this host, or when it has not been refreshed for `stale_after` seconds (an owner
on another host that died). A stale claim is broken by renaming it away (only one contender can win the
rename) and claiming afresh. Works across processes, launcher jobs and hosts sharing a file system.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0


class Claim:
    """A held claim; `release()` (or leaving its `with` block) deletes the lock file."""

    def __init__(self, path: Path, heartbeat: float) -> None:
        self.path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat,), daemon=True)
        self._thread.start()

    def _beat(self, heartbeat: float) -> None:
        while not self._stop.wait(heartbeat):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def owner_of(path: Path) -> dict:
    """The claim file's content (pid, host, time); {} when unreadable (being written or removed)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def is_stale(path: Path, stale_after: float = STALE_AFTER_S) -> bool:
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    owner = owner_of(path)
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        if not _alive(owner["pid"]):
            return True
    return age > stale_after


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def try_claim(
    path: str | os.PathLike, heartbeat: float = HEARTBEAT_S, stale_after: float = STALE_AFTER_S
) -> Claim | None:
    """Take the claim at `path` if nobody holds it (breaking a stale one); None if another owner does."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):  # a second try after breaking a stale claim
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not is_stale(path, stale_after):
                return None
            aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(path, aside)  # atomic: of several contenders exactly one moves it
            except FileNotFoundError:
                continue
            log.warning("claim %s was stale (owner %s): broken", path, owner_of(aside) or "unknown")
            with contextlib.suppress(OSError):
                aside.unlink()
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}, fh)
        return Claim(path, heartbeat)
    return None


def claim(
    path: str | os.PathLike,
    poll: float = 1.0,
    heartbeat: float = HEARTBEAT_S,
    stale_after: float = STALE_AFTER_S,
    what: str = "this work",
) -> Claim:
    """Take the claim at `path`, waiting while another live owner holds it."""
    announced = False
    while True:
        held = try_claim(path, heartbeat, stale_after)
        if held is not None:
            return held
        if not announced:
            owner = owner_of(Path(path)) or "another process"
            log.info("waiting for %s, claimed by %s (%s)", what, owner, path)
            announced = True
        time.sleep(poll)


@contextlib.contextmanager
def claimed(path: str | os.PathLike, **kwargs) -> Iterator[Claim]:
    held = claim(path, **kwargs)
    try:
        yield held
    finally:
        held.release()
