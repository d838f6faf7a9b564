"""Train or reuse, then attack: `python -m mtl_robust.pipeline [experiment=...]` (see jobs/pipeline.py)."""

from mtl_robust.jobs.pipeline import main

if __name__ == "__main__":
    main()
