"""Attack a checkpoint: `python -m mtl_robust.attack ckpt=... attack=pgd direction=dgba` (jobs/attack.py)."""

from mtl_robust.cpu_kernels import pin_instruction_set

pin_instruction_set()  # before torch loads: its libraries read the setting once (cpu_kernels.py)

from mtl_robust.jobs.attack import main  # noqa: E402

if __name__ == "__main__":
    main()
