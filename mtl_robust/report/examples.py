"""Cells that saved an example batch (clean and adversarial images with predictions), for example grids."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mtl_robust.report.directions import direction_label, direction_sort_key
from mtl_robust.report.order import defense_sort_key, method_sort_key
from mtl_robust.report.records import Record, Sources
from mtl_robust.report.tables import slug
from mtl_robust.values.budget import eps_slug, same_eps


@dataclass
class ExampleRef:
    record: Record
    path: Path
    title: str
    source: str = ""

    @property
    def name(self) -> str:
        r = self.record
        return slug(
            "example",
            self.source,
            r.data,
            r.backbone,
            r.defense,
            r.layout_name,
            r.method,
            r.direction,
            eps_slug(r.eps, r.norm),
            r.key[:8],
        )

    def sort_key(self) -> tuple:
        r = self.record
        return (
            r.store,
            defense_sort_key(r.defense),
            r.layout_name,
            method_sort_key(r.method),
            direction_sort_key(r.direction),
            r.eps,
        )


def example_refs(
    records: Sequence[Record], method: str | None = None, eps: float | None = None
) -> tuple[list[ExampleRef], list[str]]:
    """Rows that saved an example batch (the example file is looked for next to the store too)."""
    notes: list[str] = []
    sources = Sources.of(records)
    refs = []
    for r in records:
        example = r.results.get("example") if r.ok else None
        if not example:
            continue
        if (method is not None and r.method != method) or (eps is not None and not same_eps(r.eps, eps)):
            continue
        given = Path(str(example))
        # the path as written, then as if relative to the store, then the store's examples/ folder (a
        # report folder that was moved or copied together with its store)
        candidates = [
            given,
            r.base_dir / given,
            r.base_dir / "examples" / given.name,
            r.base_dir / given.name,
        ]
        path = next((c for c in candidates if c.is_file()), given)
        if not path.is_file():
            notes.append(f"example file {example!r} of cell {r.key} not found")
            continue
        prefix = sources.label(r)
        title = (
            f"{prefix + ' · ' if prefix else ''}{r.layout_name} · {r.method.upper()} "
            f"{direction_label(r.direction)} ε={r.eps_text} · defense {r.defense}"
        )
        refs.append(ExampleRef(r, path, title, prefix))
    refs.sort(key=ExampleRef.sort_key)
    return refs, notes
