"""The report command as the jobs call it (a study's multirun ends with it) and as the `mtl-report` console
script: the command itself lives with the report package (`python -m mtl_robust.report`)."""

from mtl_robust.report.__main__ import build_parser, main

__all__ = ["build_parser", "main"]
