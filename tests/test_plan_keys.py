"""The planner counts what a rerun skips: cached trainings and finished cells (transfer cells included),
keyed by the jobs' own functions; layouts' work is counted, calibrations are kept and reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mtl_robust.models import build_model
from mtl_robust.planning import plan as plan_module
from mtl_robust.planning.calibrate import Calibration, CalibrationCache
from mtl_robust.planning.flops import BACKWARD_FLOPS, TRAIN_BACKWARD_FLOPS, count_model_work
from mtl_robust.planning.plan import Planner, plan, report
from tests.conftest import compose_config
from tests.test_surrogate import TINY as SURROGATE_TINY

# The surrogate test's tiny pipeline, each cell once per surrogate: another training, and the target's own.
TINY = [*SURROGATE_TINY, "pipeline.surrogates=[{sharing: independent},{sharing: all_shared}]"]


def fake_measure(model, tasks, size, batches, device, precision, reference_flops, **_):  # noqa: ANN001
    return Calibration(
        "cpu:test", reference_flops, (8e-4, 1e-3, 2e-3), (2e-3, 3e-3, 4e-3), (8e-3, 9e-3, 9e-3)
    )


@pytest.mark.slow  # two tiny trainings and two cells
def test_a_finished_pipeline_plans_as_nothing_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mtl_robust.jobs.pipeline import run_pipeline

    monkeypatch.setattr(plan_module, "measure", fake_measure)
    monkeypatch.setattr(plan_module, "job_startup_seconds", lambda: 2.0)
    monkeypatch.setenv("MTL_ROBUST_PLAN_CACHE", str(tmp_path / "plan.json"))
    overrides = [*TINY, f"paths.log_dir={tmp_path / 'logs'}", f"paths.output_dir={tmp_path}"]
    before = plan(overrides, "cpu")
    assert [(p.training_cached, p.cells, p.cells_done) for p in before] == [(False, 2, None)]
    rows = run_pipeline(compose_config("pipeline", overrides, tmp_path))
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    (after,) = plan(overrides, "cpu")
    # one direction x 2 surrogates (another training, and the target's own: the white-box cell)
    assert (after.training_cached, after.cells, after.cells_done) == (True, 2, 2)
    assert after.attack_work.backwards == 0  # only the clean pass would run
    # Rows evaluated on a CPU are not what a GPU run would reuse (their `deterministic` field differs).
    (on_gpu,) = plan(overrides, "h100")
    assert on_gpu.cells_done == 0
    # One transfer cell's surrogate gone: that cell is not done any more, the other still is.
    target = {r["config"]["checkpoint"] for r in rows}
    (other,) = {str(p) for p in (tmp_path / "logs" / "checkpoints").glob("*.ckpt")} - target
    Path(other).unlink()
    (again,) = plan(overrides, "cpu")
    assert again.cells_done == 1


def test_a_layout_is_the_sum_of_its_counted_blocks() -> None:
    model_cfg = {"backbone": {"name": "small_resnet"}, "head": "light"}
    tasks = {"seg": 13, "normal": 3, "depth": 1}
    work = count_model_work(model_cfg, tasks, 32, 32)
    for layout in ("all_shared", "branch_at_2", "independent"):
        with torch.device("meta"):
            model = build_model(**model_cfg, tasks=tasks, layout=layout)
        x = torch.empty(1, 3, 32, 32, device="meta", requires_grad=True)
        model.requires_grad_(False)
        with FlopCounterMode(display=False) as counter:
            out = model(x)
            forward = counter.get_total_flops()
            sum(v.sum() for v in out.values()).backward()
        assert work.forward_flops(layout) == pytest.approx(forward)
        assert counter.get_total_flops() == pytest.approx(forward * (1 + BACKWARD_FLOPS), rel=0.02)
        model.requires_grad_(True)
        with FlopCounterMode(display=False) as counter:
            sum(v.sum() for v in model(torch.empty(1, 3, 32, 32, device="meta")).values()).backward()
        assert counter.get_total_flops() == pytest.approx(forward * (1 + TRAIN_BACKWARD_FLOPS), rel=0.02)
    assert (
        work.forward_flops("all_shared")
        < work.forward_flops("branch_at_2")
        < work.forward_flops("independent")
    )


def test_a_sweep_calibrates_once_and_a_later_plan_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def counting_measure(*args, **kwargs):  # noqa: ANN002, ANN003
        calls.append(args[2])
        return fake_measure(*args, **kwargs)

    monkeypatch.setattr(plan_module, "measure", counting_measure)
    monkeypatch.setattr(plan_module, "job_startup_seconds", lambda: 2.0)
    cache = tmp_path / "plan.json"
    args = ["-m", "experiment=study_transfer_smoke", f"paths.log_dir={tmp_path}"]
    first = plan(args, planner=Planner("cpu", CalibrationCache(cache)))
    assert len(first) == 4 and len(calls) == 1  # four layouts, one backbone: one calibration
    assert "calibration" in "".join(json.loads(cache.read_text()))
    second = plan(args, planner=Planner("cpu", CalibrationCache(cache)))
    assert len(calls) == 1 and [p.seconds for p in second] == [p.seconds for p in first]
    # The all-shared layout costs less than the independent one, and the range holds the median.
    shared, *_, independent = first
    assert shared.compute.mid < independent.compute.mid
    assert shared.compute.low < shared.compute.mid < shared.compute.high
    # A named GPU is modelled, and the output says how.
    gpu = Planner("h100", CalibrationCache(cache))
    on_gpu = plan(args, planner=gpu)
    assert on_gpu[0].compute.mid < first[0].compute.mid
    text = report(on_gpu, None, 0.0, list(gpu.target.notes))
    assert "NVIDIA H100" in text and "TFLOP/s" in text and " to " in text
    # A launcher whose Hydra plugin is not installed changes nothing the jobs compute: still planned.
    unlaunched = plan([*args, "hydra/launcher=submitit_not_installed"], planner=gpu)
    assert [p.seconds for p in unlaunched] == [p.seconds for p in on_gpu]


def test_a_real_calibration_times_interleaved_repeats() -> None:
    from mtl_robust.planning.calibrate import measure, timed_size

    cal = measure(
        {"backbone": {"name": "small_resnet"}, "head": "light"},
        {"seg": 13, "depth": 1},
        (16, 16),
        (4, 4),
        "cpu",
        "32",
        1e6,
        repeats=3,
    )
    assert len(cal.forward) == len(cal.gradient) == len(cal.train) == 3
    # an attack step is a forward and more, a training step more than a forward
    assert Calibration.median(cal.gradient) > Calibration.median(cal.forward) > 0
    assert Calibration.median(cal.train) > Calibration.median(cal.forward)
    assert cal.spread >= 0 and Calibration.from_json(cal.to_json()) == cal
    # large images are timed smaller on a CPU, never on a GPU
    assert timed_size("cpu", 321, 321) == (128, 128) and timed_size("cuda", 321, 321) == (321, 321)
