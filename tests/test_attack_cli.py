"""Attack evaluation from a checkpoint: rows, clean-pass cache, resume, bad input, CLI and pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from mtl_robust.evaluation.store import ResultsStore
from mtl_robust.jobs.attack import evaluate_checkpoint
from mtl_robust.jobs.train import train
from tests.conftest import compose_config, run_entry_point
from tests.wandb_records import finished_run

QUICK = ["experiment=smoke", "eval.progress=false", "attack.steps=2"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    cfg = compose_config("train", ["experiment=smoke", "train.max_epochs=2"], out)
    return train(cfg).checkpoint


def attack_cfg(compose, checkpoint: Path, extra: list[str] | None = None):
    return compose([f"ckpt={checkpoint}", *QUICK, *(extra or [])], config_name="attack")


def pairs(cfg):
    return [
        (
            OmegaConf.to_container(cfg.attack, resolve=True),
            OmegaConf.to_container(cfg.direction, resolve=True),
        )
    ]


def test_rows_have_every_measure_and_reruns_skip_done_cells(compose, checkpoint: Path) -> None:
    cfg = attack_cfg(compose, checkpoint, ["direction=dgba"])
    rows, clean, module = evaluate_checkpoint(cfg, cfg.ckpt, pairs(cfg))
    (row,) = rows
    assert row["status"] == "ok"
    res = row["results"]
    for task, task_spec in module.tasks.items():
        assert set(res["clean"][task]) == set(task_spec.higher_is_better) == set(res["rel"][task])
        assert res["rel_task"][task] is not None
    assert res["rel_avg"] == pytest.approx(sum(res["rel_task"].values()) / 3)
    assert row["config"]["direction"] == "dgba" and row["config"]["eps"] == pytest.approx(8 / 255)
    assert row["config"]["layout_name"] == "all_shared" and row["config"]["sharing_score"] == 15
    assert Path(res["example"]).is_file()
    assert list(Path(cfg.cache_dir).glob("clean_*.json")), "clean pass not cached"

    rows_again, _, _ = evaluate_checkpoint(cfg, cfg.ckpt, pairs(cfg))
    assert rows_again[0]["key"] == row["key"]
    assert len(ResultsStore(cfg.store).rows()) == 1, "a finished cell was recomputed"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("attack.eps=2", "eps"),
        ("attack.eps=-0.1", "eps"),
        ("attack.steps=0", "steps"),
    ],
)
def test_bad_budgets_fail_before_loading_anything(
    compose, tmp_path: Path, override: str, message: str
) -> None:
    cfg = attack_cfg(compose, tmp_path / "missing.ckpt", [override])
    with pytest.raises(ValueError, match=message):
        evaluate_checkpoint(cfg, cfg.ckpt, pairs(cfg))


def test_unknown_single_task_and_foreign_data_are_rejected(compose, checkpoint: Path) -> None:
    cfg = attack_cfg(compose, checkpoint, ["direction=single", "direction.task=edges"])
    with pytest.raises(ValueError, match="edges"):
        evaluate_checkpoint(cfg, cfg.ckpt, pairs(cfg))
    cfg = attack_cfg(compose, checkpoint, ["data=synthetic_taskonomy"])
    with pytest.raises(ValueError, match="trained on tasks"):
        evaluate_checkpoint(cfg, cfg.ckpt, pairs(cfg))
    cfg = attack_cfg(compose, Path("/nonexistent/last.ckpt"))
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        evaluate_checkpoint(cfg, cfg.ckpt, pairs(cfg))


def test_cli_multirun_over_directions_and_eps(checkpoint: Path, tmp_path: Path) -> None:
    proc = run_entry_point(
        "mtl_robust.attack",
        [
            "-m",
            f"ckpt={checkpoint}",
            *QUICK,
            "direction=total,dgba",
            "attack.eps=4/255,8/255",
            "eval.max_batches=1",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = ResultsStore(tmp_path / "logs" / "results" / "default.jsonl").latest()
    cells = {(r["config"]["direction"], round(r["config"]["pixel_eps"])) for r in rows.values()}
    assert cells == {("total", 4), ("total", 8), ("dgba", 4), ("dgba", 8)}
    assert all(r["status"] == "ok" for r in rows.values())


def test_pipeline_trains_once_then_reuses_everything(tmp_path: Path) -> None:
    args = ["experiment=smoke", "eval.progress=false", "attack.steps=2", "eval.max_batches=1"]
    first = run_entry_point("mtl_robust.pipeline", args, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    for line in ("single:seg", "single:normal", "single:depth", "total", "dgba", "transfer matrix"):
        assert line in first.stdout
    store = tmp_path / "logs" / "results" / "pipeline.jsonl"
    assert len(ResultsStore(store).rows()) == 5
    second = run_entry_point("mtl_robust.pipeline", args, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "reusing the checkpoint" in second.stdout + second.stderr
    assert len(ResultsStore(store).rows()) == 5, "finished cells were recomputed"
    assert not any(json.loads(line)["status"] != "ok" for line in store.read_text().splitlines())


def test_compose_attack_config_defaults(compose) -> None:
    cfg = compose(["ckpt=x.ckpt"], config_name="attack")
    with open_dict(cfg):
        assert cfg.attack.method == "pgd" and cfg.attack.eps == "8/255" and cfg.attack.random_start is False
        assert cfg.direction.name == "dgba"


def test_wandb_offline_run_per_cell_with_summary_table_and_image(
    compose, checkpoint: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    from mtl_robust.jobs.loggers import log_rows

    cfg = attack_cfg(
        compose, checkpoint, ["logger=wandb", "logger.offline=true", "study=demo", "eval.max_batches=1"]
    )
    rows, _, _ = evaluate_checkpoint(cfg, cfg.ckpt, pairs(cfg))
    log_rows(cfg.logger, rows, "demo")
    (run_dir,) = list(tmp_path.rglob("offline-run-*"))  # one run per cell
    run = finished_run(next(run_dir.glob("*.wandb")))
    assert list(run_dir.rglob("per_task_*.table.json")), "per-task table not logged"
    assert list(run_dir.rglob("example_*.png")), "example grid not logged"
    assert {"per_task/_type", "example/_type"} <= run.history_keys, run.history_keys  # table, image
    assert "rel/avg" in run.summary_keys and run.group == "demo", run
    assert {"dgba", "layout=all_shared"} <= set(run.tags), run.tags


def test_evaluating_other_images_is_another_cell(compose, checkpoint: Path) -> None:
    cfg = attack_cfg(compose, checkpoint, ["eval.max_batches=1", "eval.batch_size=4"])
    (first,), _, _ = evaluate_checkpoint(cfg, cfg.ckpt, pairs(cfg))
    cfg = attack_cfg(compose, checkpoint, ["eval.max_batches=2", "eval.batch_size=4"])
    (second,), _, _ = evaluate_checkpoint(cfg, cfg.ckpt, pairs(cfg))
    assert first["key"] != second["key"]
    assert (first["results"]["num_samples"], second["results"]["num_samples"]) == (4, 8)
    # The image set is the images read, not the settings: 1 batch of 4 then of 16 images are two cells
    # (the same max_batches), 2 batches of 4 and 1 of 8 are one.
    cfg = attack_cfg(compose, checkpoint, ["eval.max_batches=1", "eval.batch_size=16"])
    (sixteen,), _, _ = evaluate_checkpoint(cfg, cfg.ckpt, pairs(cfg))
    assert sixteen["key"] != first["key"] and sixteen["results"]["num_samples"] == 16
    assert sixteen["config"]["data_id"] != first["config"]["data_id"]
    cfg = attack_cfg(compose, checkpoint, ["eval.max_batches=1", "eval.batch_size=8"])
    (eight,), _, _ = evaluate_checkpoint(cfg, cfg.ckpt, pairs(cfg))
    assert eight["config"]["data_id"] == second["config"]["data_id"] and eight["key"] == second["key"]


def test_rows_carry_the_training_recipe_of_their_model(compose, checkpoint: Path) -> None:
    cfg = attack_cfg(compose, checkpoint, ["eval.max_batches=1"])
    (row,), _, _ = evaluate_checkpoint(cfg, cfg.ckpt, pairs(cfg))
    from mtl_robust.jobs.recipe import training_recipe

    trained = training_recipe(
        compose_config("train", ["experiment=smoke", "train.max_epochs=2", "seed=5"], Path("."))
    )
    assert row["config"]["recipe_id"] == trained.fingerprint  # the seed is not part of it
    assert row["config"]["recipe"]["train.max_epochs"] == 2


def test_a_square_row_records_its_queries_per_image(compose, checkpoint: Path) -> None:
    cfg = compose(
        [f"ckpt={checkpoint}", "experiment=smoke", "eval.progress=false", "attack=square"]
        + ["attack.queries=6", "direction=minmax", "+eval.trivial_baseline=false", "eval.examples=0"],
        config_name="attack",
    )
    (row,), _, _ = evaluate_checkpoint(cfg, cfg.ckpt, pairs(cfg))
    assert row["status"] == "ok" and row["config"]["queries"] == 6
    assert row["results"]["queries_per_image"] == 7  # 6 queries and MINMAX's clean forward
