"""Packages: `mtl_robust` and, as `mtl_robust.conf`, the repository's Hydra config tree `conf/`.

Shipping `conf/` inside the package lets installed entry points (`mtl-pipeline`, ...) find their configs;
in a checkout it stays at the top level (mtl_robust/config_location.py picks whichever exists). Everything
else is in setup.cfg.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["mtl_robust", "mtl_robust.*"]) + ["mtl_robust.conf"],
    package_dir={"mtl_robust.conf": "conf"},
)
