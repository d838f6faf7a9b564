"""summary.md, assembled section by section while the report's files are written."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mtl_robust.report.tables import Table


@dataclass
class Summary:
    """summary.md assembled section by section; `outputs` lists every file written, in order."""

    out: Path
    sections: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)

    def rel(self, path: Path) -> str:
        return Path(os.path.relpath(path, self.out)).as_posix()

    def table(self, table: Table, folder: Path) -> str:
        md, csv = table.write(folder)
        self.outputs += [md, csv]
        text = f"### {table.title}\n\n"
        if table.description:
            text += table.description + "\n\n"
        return text + table.to_markdown() + f"\n\n[markdown]({self.rel(md)}) · [CSV]({self.rel(csv)})\n"

    def image(self, path: Path, alt: str) -> str:
        self.outputs.append(path)
        return f"![{alt}]({self.rel(path)})\n"

    def write(self, header: Sequence[str]) -> Path:
        """summary.md: the header, a table of contents, the notes, then the sections in order."""
        notes = ["## Notes", ""] + ([f"- {n}" for n in unique(self.notes)] if self.notes else ["None."])
        sections = ["\n".join(notes)] + self.sections
        titles = [section.splitlines()[0].removeprefix("## ") for section in sections]
        contents = ["## Contents", ""] + [f"- [{t}](#{anchor(t)})" for t in titles]
        summary = self.out / "summary.md"
        summary.write_text(
            "\n".join(header) + "\n\n" + "\n\n".join(["\n".join(contents)] + sections) + "\n",
            encoding="utf-8",
        )
        self.outputs.append(summary)
        return summary


def anchor(title: str) -> str:
    """The heading anchor GitHub-style markdown renderers generate."""
    return "".join(c for c in title.lower() if c.isalnum() or c in " -_").replace(" ", "-")


def unique(notes: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(notes))
