"""Where the entry points find the Hydra config tree, installed or not.

In a source checkout (and an editable install) the tree is the repository's `conf/`; a built wheel ships the
same files as `mtl_robust/conf/` (see setup.py). `CONFIG_PATH` is absolute on purpose: Hydra turns a
relative `config_path` into a module name when the caller is a console script, and `conf/` is no module.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent

_SHIPPED = _PACKAGE / "conf"
CONFIG_DIR = _SHIPPED if (_SHIPPED / "pipeline.yaml").is_file() else _PACKAGE.parent / "conf"
CONFIG_PATH = str(CONFIG_DIR)
