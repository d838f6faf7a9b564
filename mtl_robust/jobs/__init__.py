"""Jobs: everything that composes Hydra configs into work.

`train`, `attack` and `pipeline` are the entry points' jobs (each with its `main`); `runner` runs any of
them (failures recorded in sweeps, one-line errors outside them); `loggers` sends their results to the
experiment logger; `failures` and `hydra_callbacks` are the Hydra callbacks sweeps use. The Lightning
parts they compose (module, datamodule, Lightning callbacks) stay in `mtl_robust.lightning`.
"""
