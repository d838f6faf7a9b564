"""The shared job runner of the entry points: failures recorded and summarised in sweeps, one-line errors
outside them; and the per-process runtime settings every job applies (threads)."""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig

from mtl_robust.cpu_kernels import kernel_isa
from mtl_robust.evaluation.store import ResultsStore, config_key
from mtl_robust.jobs.failures import CELLS_FAILED, FailedCells, full_error_requested, mark_job, one_line_error
from mtl_robust.jobs.noise import quiet_third_party_noise

log = logging.getLogger(__name__)


def configure_threads(num_threads: int | None) -> None:
    """One torch thread per job keeps parallel sweep jobs from oversubscribing the cores."""
    if num_threads:
        torch.set_num_threads(int(num_threads))


def training_threads(cfg: DictConfig) -> int:
    """The intra-op thread count training runs with: `train_num_threads`, fixed by default.

    CPU kernels split their reductions by thread count, so the trained weights (unlike attack evaluation)
    change with it; fixing it makes a run reproducible on any machine and under any launcher.
    """
    value = cfg.get("train_num_threads")
    if value is None:
        return torch.get_num_threads()
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"train_num_threads must be a positive int (or null: torch's default), got {value!r}"
        )
    return value


def runtime_info(cfg: DictConfig) -> dict[str, Any]:
    """What, besides the config, changes the trained weights: thread count, torch build, accelerator,
    whether deterministic algorithms were enforced (GPU kernels such as atomic-add reductions are not) and
    the CPU kernels' instruction set (cpu_kernels.py; adding it changed every cached key once, as pinning
    changed the weights)."""
    accelerator = str(cfg.trainer.get("accelerator", "cpu")) if cfg.get("trainer") else "cpu"
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    enforced = cfg.get("trainer") is not None and cfg.trainer.get("deterministic") is True
    fixed_threads = cfg.get("train_num_threads") is not None
    return {
        "train_num_threads": training_threads(cfg),
        "torch": str(torch.__version__),  # TorchVersion would not load with weights_only
        "accelerator": accelerator,
        "deterministic": (accelerator == "cpu" and fixed_threads) or enforced,
        "cpu_isa": kernel_isa(),
    }


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def record_failure(cfg: DictConfig, err: BaseException) -> dict[str, Any]:
    """A job that failed before it could write its own rows: one failed row keyed by the job's overrides,
    so the report shows it and a resumed sweep retries it."""
    import traceback

    overrides = job_overrides()
    config = {
        "study": cfg.get("study", "default"),
        "checkpoint": str(cfg.get("ckpt", "")),
        "overrides": overrides,
    }
    error = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=5)}"
    return ResultsStore(cfg.store).append(config_key({"overrides": overrides}), config, {}, "failed", error)


def run_job(cfg: DictConfig, job) -> Any:
    """Run one job of an entry point.

    In a multirun a failure is recorded in the results store (where the config has one) and the sweep goes
    on; a later success of the same job withdraws that failure. A single run that fails ends with one
    message, not a traceback (`HYDRA_FULL_ERROR=1` shows it).
    """
    quiet_third_party_noise()
    try:
        result = job(cfg)
    except FailedCells as err:  # the job itself finished: its failed cells are rows of their own
        if not in_multirun():
            raise SystemExit(f"error: {err}") from None
        result = err.result
        _job_finished(cfg, CELLS_FAILED, f"{err}\n{' '.join(job_overrides())}")
        return result
    except Exception as err:
        if in_multirun():
            mark_job("failed", f"{' '.join(job_overrides())}\n{type(err).__name__}: {err}")
            if not cfg.get("eval", {}).get("continue_on_error", True):
                raise
            if cfg.get("store"):
                record_failure(cfg, err)  # its row keeps the traceback
            if full_error_requested():
                log.exception("job failed; the sweep goes on")
            else:  # one line per failed job: the sweep's summary line says which and why
                message = str(one_line_error(err).code).splitlines()[0].removeprefix("error: ")
                log.error("job failed; the sweep goes on: %s", message)
            return None
        if full_error_requested():
            raise
        raise one_line_error(err) from None
    if in_multirun():
        _job_finished(cfg, "ok")
    return result


def _job_finished(cfg: DictConfig, status: str, detail: str = "") -> None:
    """A multirun job that ran to its end withdraws a failure recorded by an earlier try of it."""
    if cfg.get("store"):
        ResultsStore(cfg.store).resolve_failure(
            config_key({"overrides": job_overrides()}), {"study": cfg.get("study", "default")}
        )
    mark_job(status, detail)
