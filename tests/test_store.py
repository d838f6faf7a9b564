"""Results store: keys, resume semantics, crash safety and parallel appends."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from mtl_robust.evaluation.store import ResultsStore, config_key


def test_key_ignores_order_and_changes_with_values() -> None:
    assert config_key({"a": 1, "b": {"c": 2, "d": 3}}) == config_key({"b": {"d": 3, "c": 2}, "a": 1})
    assert config_key({"a": 1}) != config_key({"a": 2})


def _status(store: ResultsStore) -> dict[str, str]:
    return {key: row["status"] for key, row in store.latest().items()}


def test_latest_row_wins_and_a_success_replaces_a_failure(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results.jsonl")
    store.append("k1", {"eps": 1}, {}, status="failed", error="boom")
    assert _status(store) == {"k1": "failed"}
    store.append("k1", {"eps": 1}, {"rel/avg": -0.5})
    store.append("k2", {"eps": 2}, {"rel/avg": float("nan")})
    assert _status(store) == {"k1": "ok", "k2": "ok"}
    assert store.latest()["k2"]["results"]["rel/avg"] is None  # NaN stored as null: valid JSON
    assert len(store.rows()) == 3


def test_truncated_last_line_is_skipped_and_not_glued(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    store = ResultsStore(path)
    store.append("k1", {"eps": 1}, {"x": 1})
    with path.open("a") as fh:
        fh.write('{"key": "k2", "status": "ok", "res')  # a crash in the middle of a write
    assert set(store.latest()) == {"k1"}
    store.append("k3", {"eps": 3}, {"x": 3})
    assert set(store.latest()) == {"k1", "k3"}


def _append_many(path: str, worker: int) -> None:
    store = ResultsStore(path)
    for i in range(25):
        store.append(f"w{worker}-{i}", {"worker": worker, "i": i}, {"payload": "x" * 2000})


def test_parallel_appends_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    procs = [mp.get_context("fork").Process(target=_append_many, args=(str(path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert len(ResultsStore(path).latest()) == 100
