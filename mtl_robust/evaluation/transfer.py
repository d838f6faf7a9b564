"""Transfer matrix: how a SINGLE attack on task i changes every task j (the paper's RQ1)."""

from __future__ import annotations

from collections.abc import Mapping

from mtl_robust.evaluation.relative import RelativeChange


def transfer_matrix(single_results: Mapping[str, RelativeChange]) -> dict[str, dict[str, float]]:
    """`matrix[attacked][evaluated]` = relative change of the evaluated task under SINGLE(attacked)."""
    return {attacked: dict(change.per_task) for attacked, change in single_results.items()}


def format_matrix(matrix: Mapping[str, Mapping[str, float]], percent: bool = True) -> str:
    if not matrix:
        return "(empty transfer matrix)"
    evaluated = list(next(iter(matrix.values())))
    scale = 100.0 if percent else 1.0
    lines = ["attacked \\ evaluated " + " ".join(f"{t:>10}" for t in evaluated)]
    for attacked, row in matrix.items():
        lines.append(f"{attacked:<21}" + " ".join(f"{scale * row[t]:>10.2f}" for t in evaluated))
    return "\n".join(lines)
