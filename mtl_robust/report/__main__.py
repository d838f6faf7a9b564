"""`python -m mtl_robust.report`: results store(s) -> tables (markdown + CSV), PNG figures and a summary.md.

    python -m mtl_robust.report --store results.jsonl [--store other.jsonl ...] --out report/ \
        [--method pgd] [--eps 8/255] [--study transfer] [--min-seeds 3] [--include-flagged]

`--method`/`--eps` pick the attack the trade-off scatter uses and narrow the per-model figures (heatmaps,
eps curves, examples); tables always hold every cell. Several stores are compared side by side (a `store`
column in every table). The work itself is `mtl_robust.report.write_report`. The command needs neither
Hydra nor torch, so it lives here, below the jobs that also call it (a study's last step).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mtl_robust.files import WriteError
from mtl_robust.report import load_records, write_report
from mtl_robust.report.write import DEFAULT_MIN_SEEDS
from mtl_robust.values.budget import check_eps, parse_budget


def _eps_arg(text: str) -> float:
    try:
        # any radius: an L2/L1 one grows with the image (5.0 at 321x321); L-inf rows never exceed 1
        return check_eps(parse_budget(text, "--eps"), "--eps", upper=None)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mtl_robust.report",
        description="Tables, figures and a summary.md from one or more results stores (JSONL).",
    )
    parser.add_argument(
        "--store",
        action="append",
        required=True,
        metavar="PATH",
        help="results store (.jsonl); repeat to compare several studies",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument(
        "--method",
        default=None,
        help="attack method for the trade-off scatter and per-model figures (default: pgd if present)",
    )
    parser.add_argument(
        "--eps",
        type=_eps_arg,
        default=None,
        help="eps as '8/255' or a float; an L2/L1 radius as itself, e.g. 0.75 (default: the largest "
        "with DGBA rows)",
    )
    parser.add_argument(
        "--study",
        action="append",
        default=None,
        metavar="NAME",
        help="keep only rows of this config.study (repeatable)",
    )
    parser.add_argument(
        "--min-seeds",
        type=int,
        default=DEFAULT_MIN_SEEDS,
        help="seeds a comparison of training procedures needs for a verdict (default %(default)s)",
    )
    parser.add_argument(
        "--include-flagged",
        action="store_true",
        help="give verdicts on models flagged undertrained too (marked ⚠ all the same)",
    )
    parser.add_argument("--max-examples", type=int, default=12, help="at most this many example grids")
    parser.add_argument("--example-images", type=int, default=3, help="images (rows) per example grid")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        records = load_records(args.store, args.study)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not records:
        print(
            f"warning: no rows in {', '.join(args.store)}"
            + (f" for study {', '.join(args.study)}" if args.study else ""),
            file=sys.stderr,
        )
    try:
        outputs = write_report(
            records,
            args.out,
            args.store,
            args.method,
            args.eps,
            args.max_examples,
            args.example_images,
            min_seeds=args.min_seeds,
            include_flagged=args.include_flagged,
        )
    except OSError as exc:  # read-only or full disk: the path and the reason, not a traceback
        if isinstance(exc, WriteError):  # names its file already
            print(f"error: {exc}", file=sys.stderr)
        else:
            where = exc.filename or args.out
            print(f"error: cannot write the report to {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for path in outputs:
        print(f"wrote {path}")
    print(f"summary: {outputs[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
