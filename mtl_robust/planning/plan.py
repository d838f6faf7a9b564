"""Plan a pipeline command: its jobs, trainings (cached or not), cells (in the store or not), the work they
take and an estimated wall time on the chosen device, as a range. Nothing is trained or attacked.

The keys come from the jobs' own functions (`training_key` through `checkpoint_path`, `checkpoint_info`,
`evaluation_fields`, `build_cells`, `row_key`), so what the planner counts as done is what a rerun skips.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mtl_robust.attacks.config import attack_spec
from mtl_robust.attacks.precision import DEFAULT_PRECISION, parse_precision
from mtl_robust.evaluation.runner import row_key
from mtl_robust.evaluation.store import ResultsStore
from mtl_robust.jobs.attack import (
    build_cells,
    checkpoint_info,
    evaluation_fields,
    resolve_device,
    surrogate_fields,
)
from mtl_robust.jobs.pipeline import attack_list, checkpoint_path, surrogate_config
from mtl_robust.jobs.runner import configure_threads
from mtl_robust.jobs.surrogate import Surrogate
from mtl_robust.lightning.module import load_module
from mtl_robust.planning.calibrate import (
    Calibration,
    CalibrationCache,
    device_name,
    job_startup_seconds,
    measure,
    timed_size,
)
from mtl_robust.planning.cost import (
    FORWARD,
    Work,
    cell_work,
    co_watch_work,
    diagnostics_work,
    epochs_and_steps,
    split_size,
    training_work,
    validation_work,
)
from mtl_robust.planning.flops import ModelWork, count_model_work
from mtl_robust.planning.sweep import JobComposer, expand_jobs, split_multirun
from mtl_robust.planning.throughput import ZERO, NamedDevice, Seconds, device_names, measured_seconds

# Output channels of the tasks in the configs (the planner builds no data module, so no data is needed).
TASK_CHANNELS = {"seg": 13, "normal": 3, "depth": 1, "edge": 1, "keypoint": 1, "reshading": 3, "sd": 1}
# Fixed costs that no model pass shows, fitted on smoke studies on a 2-core CPU (README, Planning a sweep):
# per training iteration (Lightning's loop, logging), per job (trainer, data set-up, checkpoint, store) and
# per cell (building the attack, the row, per-image statistics). At paper scale they are noise.
STEP_SECONDS = 0.06
JOB_SECONDS = 4.5
CELL_SECONDS = 0.3
# The report a study writes when its sweep ends.
REPORT_SECONDS = 10.0
FRESH_PROCESS_LAUNCHERS = ("slurm", "submitit_local")
SWEEP_INSTALL = 'pip install -e ".[sweep]"'


@dataclass
class JobPlan:
    overrides: list[str]
    training_cached: bool
    cells: int
    cells_done: int | None  # None: unknown before the model exists (none of them can be done)
    train_work: Work  # the training iterations, the validation forwards and the CO watch's probes
    attack_work: Work  # attack cells, the clean pass and the diagnostics
    compute: Seconds = ZERO  # the model work still to do (a cached training costs none)
    startup_seconds: float = 0.0  # a fresh interpreter importing the job's modules
    train_steps: int = 0

    @property
    def seconds(self) -> Seconds:
        fixed = JOB_SECONDS + CELL_SECONDS * (self.cells - (self.cells_done or 0))
        fixed += 0.0 if self.training_cached else STEP_SECONDS * self.train_steps
        return self.compute + (self.startup_seconds + fixed)


def input_size(cfg: DictConfig) -> tuple[int, int]:
    dataset = cfg.data.get("dataset") or {}
    if dataset.get("height") and dataset.get("width"):
        return int(dataset.height), int(dataset.width)
    transform = ((cfg.data.get("splits") or {}).get("test") or {}).get("transform") or {}
    size = transform.get("size")
    if size:
        return int(size[0]), int(size[1])
    raise ValueError("the planner cannot tell the input resolution of this data config")


@dataclass
class Target:
    """Where the planned sweep runs: this machine's `device` (calibrated here), a named GPU (modelled) or
    a calibration file measured on the target machine (`--calibrate` there)."""

    spec: str | None  # None: each job's own `device`
    cache: CalibrationCache
    file: CalibrationCache | None = None
    notes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str | None, cache: CalibrationCache) -> Target:
        if spec and spec.endswith(".json"):
            if not Path(spec).is_file():
                raise SystemExit(f"mtl-plan: no calibration file {spec}")
            return cls(spec, cache, CalibrationCache(Path(spec)))
        if spec and not (spec in ("cpu", "auto") or spec.startswith("cuda") or spec in device_names()):
            raise SystemExit(
                f"mtl-plan: --device={spec}: give cpu, cuda, a calibration .json or one of "
                f"{', '.join(device_names())}"
            )
        if spec and spec.startswith("cuda") and not torch.cuda.is_available():
            raise SystemExit(
                f"mtl-plan: --device={spec}: this machine has no GPU to calibrate; name the target GPU "
                f"({', '.join(device_names())}) or give a calibration file measured there (--calibrate)"
            )
        return cls(spec, cache)

    def local_device(self, cfg: DictConfig) -> str | None:
        """The torch device calibrated here, or None when the target is modelled or a file."""
        if self.file is not None or (self.spec in device_names()):
            return None
        return str(resolve_device(self.spec or cfg.get("device", "auto")))

    def evaluation_device(self, cfg: DictConfig) -> torch.device:
        """The device type the jobs will evaluate on (it decides the rows' `deterministic` field)."""
        local = self.local_device(cfg)
        if local is not None:
            return torch.device(local)
        return torch.device("cuda")


def model_key(cfg: DictConfig, size: tuple[int, int]) -> tuple[dict[str, Any], dict[str, int], str]:
    model = {
        k: v
        for k, v in OmegaConf.to_container(cfg.model, resolve=True).items()
        if k not in ("layout", "seed")
    }
    tasks = {t: TASK_CHANNELS.get(t, 1) for t in cfg.data.tasks}
    return model, tasks, json.dumps({"model": model, "tasks": tasks, "size": list(size)}, sort_keys=True)


class Planner:
    """Plans every job of one sweep in one process: each backbone is counted once and calibrated once (on
    disk, so later plans reuse both)."""

    def __init__(self, device: str | None, cache: CalibrationCache | None = None) -> None:
        self.target = Target.parse(device, cache or CalibrationCache())

    def model_work(self, cfg: DictConfig, size: tuple[int, int]) -> ModelWork:
        model, tasks, key = model_key(cfg, size)
        stored = self.target.cache.get("work", key)
        if stored is None:
            stored = count_model_work(model, tasks, *size).to_json()
            self.target.cache.put("work", key, stored)
        return ModelWork.from_json(stored)

    def calibration(self, cfg: DictConfig, size: tuple[int, int], device: str | None) -> Calibration:
        model, tasks, key = model_key(cfg, size)
        precision = parse_precision(cfg.get("eval", {}).get("precision", DEFAULT_PRECISION))
        batches = (int(cfg.eval.get("batch_size") or cfg.data.eval_batch_size), int(cfg.data.batch_size))
        key = json.dumps(
            {"model": key, "batches": batches, "precision": precision, "torch": torch.__version__}
        )
        if self.target.file is not None:
            for section, entries in self.target.file.data.items():
                if section.startswith("calibration") and key in entries:
                    return Calibration.from_json(entries[key])
            raise SystemExit(
                f"mtl-plan: {self.target.spec} has no calibration of this model; measure it on the target "
                "machine with: python -m mtl_robust.plan --calibrate=FILE.json --device=cuda <the same "
                "overrides>"
            )
        assert device is not None
        configure_threads(cfg.get("num_threads"))  # the thread count the job itself would run with
        section = f"calibration {device_name(device)}"
        stored = self.target.cache.get(section, key)
        if stored is None:
            timed = timed_size(device, *size)
            reference = self.model_work(cfg, timed).forward_flops("all_shared")
            cal = measure(model, tasks, timed, batches, device, precision, reference)
            stored = cal.to_json()
            self.target.cache.put(section, key, stored)
        return Calibration.from_json(stored)

    def seconds(self, cfg: DictConfig, work: Work) -> tuple[Seconds, str]:
        size = input_size(cfg)
        model_work = self.model_work(cfg, size)
        flops = model_work.forward_flops(OmegaConf.to_container(cfg.model, resolve=True)["layout"])
        if self.target.spec in device_names():
            precision = parse_precision(cfg.get("eval", {}).get("precision", DEFAULT_PRECISION))
            named = NamedDevice.get(str(self.target.spec), precision)
            return named.seconds(work, flops, model_work.bytes_per_flop), named.describe()
        cal = self.calibration(cfg, size, self.target.local_device(cfg))
        median = 1e3 * Calibration.median(cal.gradient)
        where = f"from {self.target.spec}" if self.target.file is not None else "measured here"
        model = (
            f"{cal.device} {where}: {median:.3g} ms per image per forward+backward of the all-shared layout "
            f"({cal.reference_flops / 1e9:.3g} GFLOP forward at the timed size), median of "
            f"{len(cal.gradient)} interleaved repeats, spread {100 * cal.spread:.0f} %; other layouts scaled "
            "by their counted FLOPs"
        )
        return measured_seconds(cal, work, flops), model

    def plan_job(self, cfg: DictConfig, overrides: list[str], startup_seconds: float = 0.0) -> JobPlan:
        tasks = list(cfg.data.tasks)
        split = cfg.get("split", "val")
        n_eval = split_size(cfg, split)
        max_batches = cfg.get("eval", {}).get("max_batches")
        batch = int(cfg.eval.get("batch_size") or cfg.data.eval_batch_size)
        if max_batches:
            n_eval = min(n_eval, int(max_batches) * batch)
        cells = attack_list(cfg, tasks)
        pending = list(cells)
        ckpt = checkpoint_path(cfg)
        cached = ckpt.exists()
        done = None
        if cached:
            done, pending = cells_in_store(cfg, ckpt, cells, overrides, self.target.evaluation_device(cfg))
        attack = sum((cell_work(a, d, tasks) for a, d in pending), Work())
        attack = (attack + FORWARD) * n_eval  # + the clean pass
        if pending:
            attack = attack + diagnostics_work(cfg, len(tasks), batch)
        train = training_work(cfg) + validation_work(cfg) + co_watch_work(cfg)
        compute, model = self.seconds(cfg, attack if cached else attack + train)
        self.target.notes.setdefault(model, "")
        return JobPlan(
            overrides=overrides,
            training_cached=cached,
            cells=len(cells),
            cells_done=done,
            train_work=train,
            attack_work=attack,
            compute=compute,
            startup_seconds=startup_seconds,
            train_steps=epochs_and_steps(cfg)[1],
        )


def cells_in_store(
    cfg: DictConfig, ckpt: Path, cells: list, overrides: Sequence[str], device: torch.device
) -> tuple[int, list]:
    """(cells whose row is in the store with status ok, the others), keyed as the job keys its rows."""
    module = load_module(ckpt, "cpu")
    split = cfg.get("split", "val")
    info = checkpoint_info(cfg, ckpt, module, device, str(cfg.data.name)) | evaluation_fields(
        cfg, instantiate(cfg.data), split
    )
    specs = [attack_spec(a, d) for a, d in cells]
    surrogates: dict[int, Surrogate] = {}
    missing: set[int] = set()  # a transfer cell whose surrogate is not trained yet cannot be done
    fields: dict[Path, dict[str, Any]] = {}
    for i, spec in enumerate(specs):
        if spec.surrogate is None:
            continue
        given = spec.surrogate.checkpoint
        path = Path(given) if given else checkpoint_path(surrogate_config(cfg, spec.surrogate, overrides))
        if not path.is_file():
            missing.add(i)
            continue
        if path not in fields:
            fields[path] = surrogate_fields(path, load_module(path, "cpu"))
        surrogates[i] = Surrogate(module.model, fields[path])
    built = build_cells(module, specs, surrogates)
    latest = ResultsStore(cfg.store).latest() if Path(cfg.store).exists() else {}
    flags = [
        i not in missing and latest.get(row_key(info, c.config), {}).get("status") == "ok"
        for i, c in enumerate(built)
    ]
    return sum(flags), [cell for cell, flag in zip(cells, flags) if not flag]


def format_hours(seconds: float) -> str:
    return f"{seconds / 3600:.3g} h" if seconds >= 3600 else f"{seconds / 60:.2g} min"


def format_range(s: Seconds) -> str:
    return f"about {format_hours(s.mid)} ({format_hours(s.low)} to {format_hours(s.high)})"


def without_launcher(args: Sequence[str]) -> list[str]:
    return [a for a in args if a.split("=", 1)[0].lstrip("+~") not in ("launcher", "hydra/launcher")]


def launcher_missing(err: Exception) -> bool:
    """Hydra could not compose the launcher: its plugin (`[sweep]` extra) is not installed."""
    return "hydra/launcher" in str(err)


def compose_or_explain(overrides: Sequence[str], composer: JobComposer | None = None) -> DictConfig:
    """The job's config. The launcher does not change what a job computes: when its Hydra plugin is not
    installed, the job is composed without it (its start-up per job is still counted)."""
    composer = composer or JobComposer()
    try:
        return composer(overrides)
    except Exception as err:  # noqa: BLE001 - Hydra raises several types for a missing config
        if not launcher_missing(err):
            raise
        return composer(without_launcher(overrides))


def plan(
    args: Sequence[str],
    device: str | None = None,
    planner: Planner | None = None,
    composer: JobComposer | None = None,
) -> list[JobPlan]:
    planner = planner or Planner(device)
    composer = composer or JobComposer()
    try:
        jobs = expand_jobs(args, composer=composer)
    except Exception as err:  # noqa: BLE001 - Hydra raises several types for a missing config
        if not launcher_missing(err):
            raise
        print(f"mtl-plan: the launcher's Hydra plugin is not installed ({SWEEP_INSTALL}); planned without it")
        jobs = expand_jobs(without_launcher(args), composer=composer)
    # Hydra's basic launcher runs the jobs one after another in this process (and joblib reuses its
    # workers): the interpreter starts once. Cluster and submitit jobs each start a fresh one.
    startup = planner.target.cache.get("startup", device_name("cpu"))
    if startup is None:
        startup = job_startup_seconds()
        planner.target.cache.put("startup", device_name("cpu"), startup)
    fresh_process = _launcher(args) in FRESH_PROCESS_LAUNCHERS
    plans = []
    for i, overrides in enumerate(jobs):
        cfg = compose_or_explain(overrides, composer)
        starts = fresh_process or i == 0
        plans.append(planner.plan_job(cfg, overrides, startup if starts else 0.0))
    return plans


def end_of_sweep_seconds(args: Sequence[str], composer: JobComposer | None = None) -> float:
    """What a sweep spends after its last job: the study's report, when it writes one."""
    multirun, overrides = split_multirun(args)
    if not multirun:
        return 0.0
    callbacks = compose_or_explain(overrides, composer).hydra.get("callbacks") or {}
    return REPORT_SECONDS if "report" in callbacks else 0.0


def report(
    plans: Sequence[JobPlan], launcher: str | None, end_seconds: float = 0.0, models: Sequence[str] = ()
) -> str:
    lines = []
    for i, job in enumerate(plans):
        done = "?" if job.cells_done is None else str(job.cells_done)
        lines.append(
            f"job {i}: {' '.join(job.overrides) or '(defaults)'}\n"
            f"    training {'cached' if job.training_cached else 'to run'} "
            f"({job.train_work.train_steps:.3g} image steps), cells {job.cells} ({done} in the store), "
            f"{job.attack_work.backwards:.3g} attack backwards, {job.startup_seconds:.0f} s start-up -> "
            f"{format_range(job.seconds)}"
        )
    trainings = sum(not j.training_cached for j in plans)
    cells = sum(j.cells for j in plans)
    done = sum(j.cells_done or 0 for j in plans)
    total = sum((j.seconds for j in plans), ZERO) + end_seconds
    longest = max((j.seconds for j in plans), key=lambda s: s.mid, default=ZERO)
    unit = "array task" if launcher == "slurm" else "job"
    lines.append(
        f"{len(plans)} {unit}s: {trainings} trainings to run ({len(plans) - trainings} cached), "
        f"{cells} cells ({done} already in the store), {format_range(total)} in total, longest {unit} "
        f"{format_range(longest)}"
    )
    lines.extend(f"model: {m}" for m in models)
    return "\n".join(lines)


def _launcher(args: Sequence[str]) -> str | None:
    for a in args:
        if a.startswith("launcher="):
            return a.split("=", 1)[1]
    return None


USAGE = f"""usage: python -m mtl_robust.plan [--device=DEVICE] <pipeline overrides, -m included>
       python -m mtl_robust.plan --calibrate=FILE.json [--device=cuda] <the same overrides>

Prints every job of the pipeline command (training cached or not, cells already in the store, the work
left) and the estimated wall time per job and in total, as a range, with the model behind it. Nothing is
trained or attacked. DEVICE: cpu or cuda (calibrated on this machine, once per backbone and resolution,
kept in $MTL_ROBUST_PLAN_CACHE or ~/.cache/mtl_robust/planner.json), a named GPU (modelled from its peak
throughput: {", ".join(device_names())}), or a calibration file written by --calibrate on the target machine.
Example: python -m mtl_robust.plan -m experiment=study_directions_paper --device=h100"""


def main(argv: Sequence[str] | None = None) -> None:
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return
    unknown = [a for a in args if a.startswith("--") and not a.startswith(("--device=", "--calibrate="))]
    if unknown:
        raise SystemExit(f"mtl-plan: unknown option(s) {' '.join(unknown)}\n{USAGE}")
    options = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if a.startswith("--")}
    args = [a for a in args if not a.startswith("--")]
    device = options.get("--device")
    if "--calibrate" in options:
        cache = CalibrationCache(Path(options["--calibrate"]))
        planner = Planner(device if device not in device_names() else None, cache)
        composer = JobComposer()
        plans = plan(args, planner=planner, composer=composer)
        print(
            report(plans, _launcher(args), end_of_sweep_seconds(args, composer), list(planner.target.notes))
        )
        print(f"calibration written to {cache.path}; plan with it anywhere: --device={cache.path}")
        return
    planner = Planner(device)
    composer = JobComposer()  # one for the whole command: the sweep's configs composed once
    plans = plan(args, planner=planner, composer=composer)
    print(report(plans, _launcher(args), end_of_sweep_seconds(args, composer), list(planner.target.notes)))
