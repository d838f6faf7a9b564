"""How a multi-task model combines its task losses into one update (the `mtl` config group): a static
weighted sum, a loss weighting (UW, DWA) or a gradient aggregator (MGDA, PCGrad, CAGrad, Nash-MTL, UPGrad,
IMTL-G), the methods from torchjd. docs/mtl_methods.md says what each aggregates on a tree of blocks."""

from mtl_robust.mtl.methods import AGGREGATORS, METHODS, WEIGHTINGS, MultiTaskMethod, build_method

__all__ = ["AGGREGATORS", "METHODS", "WEIGHTINGS", "MultiTaskMethod", "build_method"]
