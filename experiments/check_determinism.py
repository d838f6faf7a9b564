"""Run a tiny pipeline twice from empty log folders and say whether the rows are bit-identical.

    python experiments/check_determinism.py                      # CPU, plain then under launcher=joblib
    python experiments/check_determinism.py --device cuda         # GPU, deterministic algorithms enforced
    python experiments/check_determinism.py --device cuda --no-enforce   # GPU as is (may differ)
    python experiments/check_determinism.py --plain --cpu-isa avx2,native  # pinned CPU kernels vs native

The CPU runs use the entry points' kernel pin (AVX2, docs/reproducibility.md) unless --cpu-isa says otherwise:
one choice for both runs, or two (first run, second run); on an AVX-512 CPU avx2,native train different models
(rows differ, exit code 1), on an AVX2-only CPU the same.

Rows are compared without timings and paths; the per-image statistics files are compared too. Exit code 0
when identical, 1 when not. wandb is off (logger=none) and the LP check is not used, so neither wandb nor
cvxpy needs to be importable beyond what the pipeline imports.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "experiment=smoke",
    "logger=none",
    "pipeline.eps=[8/255]",
    "attack.steps=3",
    "eval.examples=0",
    "eval.progress=false",
]


def run_once(
    root: Path, device: str, enforce: bool, joblib: bool, cpu_isa: str
) -> subprocess.CompletedProcess:
    args = list(TINY)
    if device == "cuda":
        args += ["device=cuda", "trainer=gpu"] + (["trainer.deterministic=true"] if enforce else [])
    if joblib:
        args = ["-m", "launcher=joblib", "hydra.launcher.n_jobs=1", *args]
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "MTL_ROBUST_ROOT": str(root), "WANDB_MODE": "disabled", "PYTHONPATH": pythonpath}
    env["MTL_ROBUST_CPU_ISA"] = cpu_isa
    if device == "cuda" and enforce:
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # cuBLAS needs it for deterministic GEMMs
    return subprocess.run(
        [sys.executable, "-m", "mtl_robust.pipeline", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--no-enforce", action="store_true", help="GPU: do not enforce deterministic kernels")
    parser.add_argument("--plain", action="store_true", help="run both times without launcher=joblib")
    parser.add_argument(
        "--cpu-isa", default="avx2", help="MTL_ROBUST_CPU_ISA of both runs, or of each: avx2,native"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from mtl_robust.evaluation.reproducibility import compare_stores
    from mtl_robust.evaluation.store import ResultsStore

    isas = args.cpu_isa.split(",") * (2 if "," not in args.cpu_isa else 1)
    if len(isas) != 2 or not set(isas) <= {"avx2", "native"}:
        parser.error(f"--cpu-isa: avx2, native, or two of them comma-separated; got {args.cpu_isa!r}")
    with tempfile.TemporaryDirectory(prefix="determinism-") as tmp:
        roots = [Path(tmp) / "a", Path(tmp) / "b"]
        for i, root in enumerate(roots):
            joblib = i == 1 and not args.plain
            proc = run_once(root, args.device, not args.no_enforce, joblib, isas[i])
            if proc.returncode != 0:
                print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n")
                print(f"run {i + 1} failed (exit code {proc.returncode})")
                return 2
        stores = [root / "logs" / "results" / "pipeline.jsonl" for root in roots]
        rows = ResultsStore(stores[0]).latest()
        flags = sorted({str(r["config"].get("deterministic")) for r in rows.values()})
        problems = compare_stores(*stores)
        how = "plain twice" if args.plain else "plain, then launcher=joblib"
        print(f"device {args.device}; runs: {how}; CPU kernels (MTL_ROBUST_CPU_ISA): {' then '.join(isas)}")
        print(f"{len(rows)} rows; row field deterministic: {flags}")
        if problems:
            print("NOT bit-identical:")
            print("\n".join(f"  {p}" for p in problems[:20]))
            return 1
        print("bit-identical rows and per-image statistics (timings and paths ignored)")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
