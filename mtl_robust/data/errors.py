"""Error types for dataset readers.

A user who points a reader at the wrong folder should learn, from one message, what was expected,
where it was looked for, where to get the data and which config key to set. ``DataRootError`` carries
all four; ``DataFormatError`` reports files that exist but do not have the expected content.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "DataRootError",
    "DataFormatError",
    "NYUV2_ADASHARE_SOURCE",
    "NYUV2_MTAN_SOURCE",
    "TASKONOMY_SOURCE",
]

NYUV2_ADASHARE_SOURCE = (
    "the 'formatted NYU v2' download linked in the AdaShare README (https://github.com/sunxm2357/AdaShare, "
    "section 'Datasets') or the NYUv2 link in the TreeMTL README (https://github.com/zhanglijun95/TreeMTL, "
    "section 'Appendix'); unpack it so that the folder holding nyu_v2_3task.json is the root"
)
NYUV2_MTAN_SOURCE = (
    "the pre-processed NYUv2 archive linked in the MTAN README (https://github.com/lorenmt/mtan, "
    "'Download our pre-processed NYUv2 dataset'); unpack it so that the folder holding train/ and val/ is "
    "the root"
)
TASKONOMY_SOURCE = (
    "Tiny-Taskonomy in the AdaShare layout: the TreeMTL README (https://github.com/zhanglijun95/TreeMTL) "
    "says to request it from the Taskonomy authors (http://taskonomy.stanford.edu/, "
    "https://github.com/StanfordVL/taskonomy/tree/master/data); the root must hold taskonomy.json, "
    "semseg_prior_factor.npy, train/ and test/"
)


class DataRootError(FileNotFoundError):
    """A data root (or a file it should contain) is missing.

    Subclasses ``FileNotFoundError`` so generic handlers still catch it; ``str(err)`` is the whole
    multi-line explanation.
    """

    def __init__(
        self,
        dataset: str,
        root: str | Path,
        problem: str,
        expected: Sequence[str] = (),
        obtain: str | None = None,
        config_key: str = "data.root",
    ) -> None:
        self.dataset = dataset
        self.root = Path(root)
        self.problem = problem
        self.expected = tuple(expected)
        self.obtain = obtain
        self.config_key = config_key
        super().__init__(self._format())

    def _format(self) -> str:
        lines = [f"{self.dataset}: {self.problem}", f"  data root: {self.root}"]
        if self.expected:
            lines.append("  expected under the root:")
            lines.extend(f"    {item}" for item in self.expected)
        if self.obtain:
            lines.append(f"  where to get it: {self.obtain}")
        lines.append(
            f"  how to fix: put the data there, or point the config at it with "
            f"`{self.config_key}=/path/to/data` (or pass root=... to the reader)"
        )
        return "\n".join(lines)

    def __str__(self) -> str:  # FileNotFoundError would otherwise print the errno-style tuple
        return self._format()


class DataFormatError(ValueError):
    """A data file exists but its content does not match the format (shape, dtype, value range)."""
