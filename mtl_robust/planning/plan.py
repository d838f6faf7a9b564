"""Plan a pipeline command: its jobs, trainings (cached or not), cells (in the store or not), passes and
an estimated wall time from one calibrated forward+backward. Nothing is trained or attacked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from mtl_robust.attacks.config import attack_spec
from mtl_robust.attacks.precision import DEFAULT_PRECISION, parse_precision
from mtl_robust.evaluation.runner import row_key
from mtl_robust.evaluation.store import ResultsStore
from mtl_robust.jobs.attack import build_cells, image_set_id, model_info, resolve_device
from mtl_robust.jobs.pipeline import attack_list, training_key
from mtl_robust.jobs.runner import configure_threads
from mtl_robust.lightning.module import load_module
from mtl_robust.planning.calibrate import job_startup_seconds, seconds_per_pass
from mtl_robust.planning.cost import (
    cell_passes,
    co_watch_passes,
    diagnostics_passes,
    split_size,
    training_passes,
    training_steps,
    validation_passes,
)
from mtl_robust.planning.sweep import compose_job, expand_jobs, split_multirun

# Reduced precision's speed-up is not assumed: the calibration runs in float32, so a bf16 plan is an upper
# bound. Training steps cost about this many input-gradient passes (the weight gradients and the optimiser).
TRAINING_OVERHEAD = 1.3
# Fixed costs that no model pass shows, fitted on two smoke studies (study_transfer_smoke and
# study_fast_at_smoke, each alone on a 2-core CPU): per training step (Lightning's loop, the optimiser,
# logging), per job (trainer, data set-up, checkpoint, clean pass and diagnostics' bookkeeping, store) and
# per cell (building the attack, the row, per-image statistics). At paper scale they are noise; at smoke
# scale they are most of the time.
STEP_SECONDS = 0.06
JOB_SECONDS = 4.5
CELL_SECONDS = 0.3
# The report a study writes when its sweep ends.
REPORT_SECONDS = 10.0
FRESH_PROCESS_LAUNCHERS = ("slurm", "submitit_local")


@dataclass
class JobPlan:
    overrides: list[str]
    training_cached: bool
    cells: int
    cells_done: int | None  # None: unknown before the model exists (none of them can be done)
    train_passes: float  # training steps, the validation forwards and the CO watch's probes
    attack_passes: float  # attack cells, the clean pass and the diagnostics
    seconds_per_pass: float
    startup_seconds: float = 0.0  # a fresh interpreter importing the job's modules
    train_steps: int = 0

    @property
    def seconds(self) -> float:
        train = 0.0 if self.training_cached else self.train_passes * TRAINING_OVERHEAD
        fixed = JOB_SECONDS + CELL_SECONDS * (self.cells - (self.cells_done or 0))
        fixed += 0.0 if self.training_cached else STEP_SECONDS * self.train_steps
        return self.startup_seconds + fixed + (train + self.attack_passes) * self.seconds_per_pass


def plan_job(
    cfg: DictConfig,
    overrides: list[str],
    calibration: dict[tuple, float],
    device: str,
    startup_seconds: float = 0.0,
) -> JobPlan:
    tasks = list(cfg.data.tasks)
    split = cfg.get("split", "val")
    n_eval = split_size(cfg, split)
    max_batches = cfg.get("eval", {}).get("max_batches")
    batch = int(cfg.eval.get("batch_size") or cfg.data.eval_batch_size)
    if max_batches:
        n_eval = min(n_eval, int(max_batches) * batch)
    cells = attack_list(cfg, tasks)
    pending_cells = list(cells)
    ckpt = Path(cfg.paths.log_dir) / "checkpoints" / f"{training_key(cfg)}.ckpt"
    cached = ckpt.exists()
    done = None
    if cached:
        done, pending_cells = _cells_in_store(cfg, ckpt, cells, split)
    passes = sum(cell_passes(a, d, len(tasks)) for a, d in pending_cells) + 1 / 3  # + the clean pass
    diagnostics = diagnostics_passes(cfg, len(tasks), batch) if pending_cells else 0.0
    key = (str(cfg.model), tuple(cfg.data.tasks), batch)
    if key not in calibration:
        configure_threads(cfg.get("num_threads"))  # the thread count the job itself would run with
        calibration[key] = seconds_per_pass(cfg, batch, device)
    return JobPlan(
        overrides=overrides,
        training_cached=cached,
        cells=len(cells),
        cells_done=done,
        train_passes=training_passes(cfg) + validation_passes(cfg) + co_watch_passes(cfg),
        attack_passes=passes * n_eval + diagnostics,
        seconds_per_pass=calibration[key],
        startup_seconds=startup_seconds,
        train_steps=training_steps(cfg),
    )


def _cells_in_store(cfg: DictConfig, ckpt: Path, cells: list, split: str) -> tuple[int, list]:
    module = load_module(ckpt, "cpu")
    info = model_info(ckpt, module, str(cfg.data.name), split, cfg.get("study", "default"))
    info["data_id"] = image_set_id(cfg, instantiate(cfg.data), split)
    info["precision"] = parse_precision(cfg.get("eval", {}).get("precision", DEFAULT_PRECISION))
    built = build_cells(module, [attack_spec(a, d) for a, d in cells])
    latest = ResultsStore(cfg.store).latest() if Path(cfg.store).exists() else {}
    flags = [latest.get(row_key(info, c.config), {}).get("status") == "ok" for c in built]
    return sum(flags), [cell for cell, flag in zip(cells, flags) if not flag]


def format_hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def plan(args: Sequence[str], device: str | None = None) -> list[JobPlan]:
    jobs = expand_jobs(args)
    calibration: dict[tuple, float] = {}
    # Hydra's basic launcher runs the jobs one after another in this process (and joblib reuses its
    # workers): the interpreter starts once. Cluster and submitit jobs each start a fresh one.
    startup = job_startup_seconds()
    fresh_process = _launcher(args) in FRESH_PROCESS_LAUNCHERS
    plans = []
    for i, overrides in enumerate(jobs):
        cfg = compose_job(overrides)
        chosen = device or str(resolve_device(cfg.get("device", "auto")))
        starts = fresh_process or i == 0
        plans.append(plan_job(cfg, overrides, calibration, chosen, startup if starts else 0.0))
    return plans


def end_of_sweep_seconds(args: Sequence[str]) -> float:
    """What a sweep spends after its last job: the study's report, when it writes one."""
    multirun, overrides = split_multirun(args)
    if not multirun:
        return 0.0
    callbacks = compose_job(overrides).hydra.get("callbacks") or {}
    return REPORT_SECONDS if "report" in callbacks else 0.0


def report(plans: Sequence[JobPlan], launcher: str | None, end_seconds: float = 0.0) -> str:
    lines = []
    for i, job in enumerate(plans):
        done = "?" if job.cells_done is None else str(job.cells_done)
        lines.append(
            f"job {i}: {' '.join(job.overrides) or '(defaults)'}\n"
            f"    training {'cached' if job.training_cached else 'to run'} "
            f"({job.train_passes:.3g} passes), cells {job.cells} ({done} in the store), "
            f"{job.attack_passes:.3g} attack passes, {1e3 * job.seconds_per_pass:.2f} ms/pass, "
            f"{job.startup_seconds:.0f} s start-up -> about {format_hours(job.seconds)}"
        )
    trainings = sum(not j.training_cached for j in plans)
    cells = sum(j.cells for j in plans)
    done = sum(j.cells_done or 0 for j in plans)
    total = sum(j.seconds for j in plans) + end_seconds
    unit = "array task" if launcher == "slurm" else "job"
    lines.append(
        f"{len(plans)} {unit}s: {trainings} trainings to run ({len(plans) - trainings} cached), "
        f"{cells} cells ({done} already in the store), about {format_hours(total)} in total, longest {unit} "
        f"{format_hours(max((j.seconds for j in plans), default=0.0))}"
    )
    return "\n".join(lines)


def _launcher(args: Sequence[str]) -> str | None:
    for a in args:
        if a.startswith("launcher="):
            return a.split("=", 1)[1]
    return None


USAGE = """usage: python -m mtl_robust.plan [--device=cpu|cuda] <pipeline overrides, -m included>

Prints every job of the pipeline command (training cached or not, cells already in the store, passes, the
calibrated seconds per pass, start-up) and the estimated wall time per job and in total. Nothing is trained
or attacked. Example: python -m mtl_robust.plan -m experiment=study_directions_paper --device=cuda"""


def main(argv: Sequence[str] | None = None) -> None:
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return
    unknown = [a for a in args if a.startswith("--") and not a.startswith("--device=")]
    if unknown:
        raise SystemExit(f"mtl-plan: unknown option(s) {' '.join(unknown)}\n{USAGE}")
    device = None
    for a in list(args):
        if a.startswith("--device="):
            device = a.split("=", 1)[1]
            args.remove(a)
    print(report(plan(args, device), _launcher(args), end_of_sweep_seconds(args)))
