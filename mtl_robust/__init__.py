"""mtl_robust: adversarial robustness of multi-task vision models (DGBA and baselines)."""

__version__ = "0.1.0"
