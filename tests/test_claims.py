"""Claims: one owner per cell or training at a time, stale claims broken, two pipelines share the work."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from mtl_robust.evaluation.claims import claimed, is_stale, owner_of, try_claim
from mtl_robust.evaluation.store import ResultsStore
from tests.conftest import REPO_ROOT


def test_a_claim_is_exclusive_until_released(tmp_path: Path) -> None:
    path = tmp_path / "claims" / "cell.claim"
    first = try_claim(path)
    assert first is not None and try_claim(path) is None
    assert owner_of(path)["pid"] == os.getpid() and owner_of(path)["host"] == socket.gethostname()
    first.release()
    assert not path.exists()
    with claimed(path) as again:
        assert again.path == path and path.exists()
    assert not path.exists()


def test_claims_of_dead_processes_or_silent_owners_are_stale(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    path = tmp_path / "dead.claim"
    path.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "time": 0}))
    assert is_stale(path)
    held = try_claim(path)  # broken and taken over
    assert held is not None and owner_of(path)["pid"] == os.getpid()
    held.release()

    elsewhere = tmp_path / "remote.claim"  # a live-looking owner on another host: only silence makes it stale
    elsewhere.write_text(json.dumps({"pid": 1, "host": "another-host", "time": 0}))
    assert not is_stale(elsewhere, stale_after=60) and try_claim(elsewhere, stale_after=60) is None
    old = time.time() - 120
    os.utime(elsewhere, (old, old))
    assert is_stale(elsewhere, stale_after=60)


def test_a_held_claim_keeps_beating(tmp_path: Path) -> None:
    path = tmp_path / "long.claim"
    held = try_claim(path, heartbeat=0.05)
    old = time.time() - 120
    os.utime(path, (old, old))
    time.sleep(0.3)
    assert not is_stale(path, stale_after=60), "the owner did not refresh its claim"
    held.release()


def test_two_identical_pipelines_share_one_store(tmp_path: Path) -> None:
    """Started together on one log folder: one trains, the other waits; every cell is computed once."""
    args = [
        "experiment=smoke",
        "attack.steps=1",
        "eval.max_batches=1",
        "eval.examples=0",
        "trainer.max_steps=4",
    ]
    env = {**os.environ, "MTL_ROBUST_ROOT": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mtl_robust.pipeline", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    rows = ResultsStore(tmp_path / "logs" / "results" / "pipeline.jsonl").rows()
    assert len(rows) == 5 and len({r["key"] for r in rows}) == 5, "a cell was computed twice"
    trainings = list((tmp_path / "logs").rglob("metrics.json"))
    assert len(trainings) == 1, f"trained {len(trainings)} times"
    assert len(list((tmp_path / "logs" / "checkpoints").glob("*.ckpt"))) == 1
    assert not list((tmp_path / "logs").rglob("*.claim")), "claims left behind"
    # Both print the full table (the waiting one reads the other's rows), and progress as plain lines.
    for out, err in outputs:
        assert sum(line.startswith("pgd ") for line in out.splitlines()) == 5 and "\r" not in out + err
        assert "cell 5/5" in err and "ETA" in err
