"""Attack a checkpoint: `python -m mtl_robust.attack ckpt=... attack=pgd direction=dgba` (jobs/attack.py)."""

from mtl_robust.jobs.attack import main

if __name__ == "__main__":
    main()
