"""`python -m mtl_robust.plan <pipeline overrides, -m included> [--device=cpu]`: what the same pipeline
command would train and attack, and about how long it takes (mtl_robust.planning)."""

from mtl_robust.cpu_kernels import pin_instruction_set

pin_instruction_set()  # before torch loads: its libraries read the setting once (cpu_kernels.py)

from mtl_robust.planning.plan import main  # noqa: E402

if __name__ == "__main__":
    main()
