"""`python -m mtl_robust.plan <pipeline overrides, -m included> [--device=cpu]`: what the same pipeline
command would train and attack, and about how long it takes (mtl_robust.planning)."""

from mtl_robust.planning.plan import main

if __name__ == "__main__":
    main()
