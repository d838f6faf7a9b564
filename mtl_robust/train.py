"""Train a multi-task model: `python -m mtl_robust.train [data=...] [sharing=...] ...` (see jobs/train.py)."""

from mtl_robust.jobs.train import main

if __name__ == "__main__":
    main()
