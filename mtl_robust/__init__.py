"""mtl_robust: adversarial robustness of multi-task vision models (DGBA and baselines)."""

from mtl_robust.config_resolvers import register as _register_resolvers

__version__ = "0.1.0"

_register_resolvers()
