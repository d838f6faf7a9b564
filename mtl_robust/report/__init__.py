"""Reports from results stores: tables (markdown + CSV), PNG figures and a summary.md.

    python -m mtl_robust.report --store results.jsonl [--store other.jsonl ...] --out report/

From Python::

    from mtl_robust.report import load_records, write_report
    write_report(load_records(["results.jsonl"]), "report/", ["results.jsonl"])

Modules, one job each: `records` (store rows -> `Record`), `order` (row and column order), `directions`
(direction names, order and look, from the direction registry), `models` (models, their clean rows and
independent baselines), `tables` (`Table` and the tables built from records), `curves`, `transfer`,
`tradeoff`, `examples` (what the figures draw), `figures` (matplotlib), `seeds` (rows grouped over seeds,
with their estimates), the sections `uncertainty`, `reliability` and `cost`, and `summary`/`write`
(summary.md and `write_report`). The command line is `report/__main__` (`python -m mtl_robust.report`).

Importing the package needs neither torch nor matplotlib: per-image statistics (torch) are loaded inside
the uncertainty section, figures (matplotlib) when a report is written.
"""

from mtl_robust.report.records import Record, Sources, load_records, store_labels
from mtl_robust.report.tables import Table
from mtl_robust.report.write import write_report

__all__ = ["Record", "Sources", "Table", "load_records", "store_labels", "write_report"]
