"""Planning time of the paper studies: cold (an empty calibration cache: counts and calibrations made),
warm (the same cache again), and before (the planner of commit `--before`, which calibrated every layout
with real passes: timed on one job and extrapolated to the study's distinct layouts, as it was far too slow
to run whole on this machine). Each plan is a fresh interpreter, as a user runs it; the plans' last lines are
printed.

    python experiments/benchmarks/bench_plan.py [--before 7b2578d] [--skip-before] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STUDIES = {"study_transfer_paper": 27, "study_directions_paper": 7}  # distinct layouts of each sweep


def run_plan(args: list[str], env: dict[str, str], pythonpath: Path) -> tuple[float, str]:
    """(wall seconds, stdout) of one plan; the CPU seconds it used are printed (a shared machine's wall
    time mostly measures the other processes)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mtl_robust.plan", *args],
        cwd=pythonpath,
        env={**env, "PYTHONPATH": str(pythonpath)},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime
    print(
        f"  [{' '.join(args)}: {seconds:.1f} s wall, {cpu:.1f} s CPU, load {os.getloadavg()[0]:.1f}]",
        flush=True,
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return seconds, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", default="7b2578d")
    parser.add_argument("--skip-before", action="store_true")
    parser.add_argument("--rounds", type=int, default=1)
    opts = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_plan_"))
    env = {**os.environ, "MTL_ROBUST_ROOT": str(root), "OMP_NUM_THREADS": "1"}
    for study in STUDIES:
        args = ["-m", f"experiment={study}"]
        for r in range(opts.rounds):
            env["MTL_ROBUST_PLAN_CACHE"] = str(root / f"cache_{study}_{r}.json")
            cold, _ = run_plan(args, env, REPO)
            warm, out = run_plan(args, env, REPO)
            print(f"{study} round {r}: cold {cold:.1f} s, warm {warm:.1f} s")
        print("\n".join(out.strip().splitlines()[-3:]))
        gpu_s, gpu = run_plan([*args, "--device=h100"], env, REPO)
        print(
            f"{study} --device=h100 (warm counts): {gpu_s:.1f} s\n" + "\n".join(gpu.strip().splitlines()[-2:])
        )
    if opts.skip_before:
        return
    old = root / "before"
    old.mkdir()
    archive = subprocess.run(
        ["git", "archive", opts.before, "mtl_robust", "conf", "setup.cfg"],
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    for study, layouts in STUDIES.items():
        one_job = ["-m", f"experiment={study}", "model.layout=0", "defense=none"]
        seconds, out = run_plan(one_job, env, old)
        print(
            f"{study} before ({opts.before}), one job: {seconds:.1f} s; its {layouts} layouts calibrated one "
            f"after another: about {seconds * layouts / 60:.1f} min (extrapolated)\n  "
            + out.strip().splitlines()[-1]
        )


if __name__ == "__main__":
    main()
