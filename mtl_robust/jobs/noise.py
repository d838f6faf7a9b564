"""Third-party output that says nothing about the run, filtered by its exact message (never wholesale):
every other warning and log line of a dependency still shows.

* Lightning's advertising tip for its cloud logger, printed whenever a Trainer is built.
* torch's FutureWarning that `LeafSpec` is deprecated, raised from inside Lightning's own pytree helper.
* Lightning's warning that an epoch has fewer batches than `log_every_n_steps`: at smoke scale an epoch is
  a few batches, and the losses are still logged every `log_every_n_steps` steps across epochs.
"""

from __future__ import annotations

import logging
import re
import warnings

TIP = "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]"
LEAF_SPEC = "`isinstance(treespec, LeafSpec)` is deprecated"
LOGGING_INTERVAL = r"The number of training batches \(\d+\) is smaller than the logging interval"
TIP_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def quiet_third_party_noise() -> None:
    """Install the filters (idempotent: safe to call at the start of every job)."""
    warnings.filterwarnings("ignore", message=re.escape(LEAF_SPEC), category=FutureWarning)
    warnings.filterwarnings("ignore", message=LOGGING_INTERVAL)
    for name in TIP_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) for f in logger.filters):
            logger.addFilter(_DropMessage(TIP))
