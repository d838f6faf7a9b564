"""`python -m mtl_robust.report --store results.jsonl --out report/` (see `mtl_robust.jobs.report`)."""

import sys

from mtl_robust.jobs.report import main

sys.exit(main())
