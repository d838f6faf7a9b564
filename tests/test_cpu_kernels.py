"""The CPU kernels' instruction set: pinned by the entry points before torch loads, recorded in the training
key, left alone on request (docs/reproducibility.md)."""

from __future__ import annotations

import ast
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from mtl_robust import cpu_kernels
from mtl_robust.cpu_kernels import CHOICE_VARIABLE, PINNED, pin_instruction_set, requested_choice
from tests.conftest import REPO_ROOT, compose_config

ON_X86 = platform.machine().lower() in cpu_kernels.X86


def test_pinning_caps_every_library_but_never_overrides_the_user(monkeypatch) -> None:
    monkeypatch.setattr(cpu_kernels.platform, "machine", lambda: "x86_64")
    env: dict[str, str] = {}
    assert pin_instruction_set(env) == PINNED and env == PINNED
    assert set(PINNED) == {"ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR"}
    env = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}
    pin_instruction_set(env)
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX512_CORE" and env["MKL_CBWR"] == PINNED["MKL_CBWR"]
    env = {CHOICE_VARIABLE: "native"}
    assert pin_instruction_set(env) == {} and env == {CHOICE_VARIABLE: "native"}
    monkeypatch.setattr(cpu_kernels.platform, "machine", lambda: "aarch64")
    assert pin_instruction_set(env := {}) == {} and env == {}


def test_an_unknown_choice_is_refused_with_the_valid_ones() -> None:
    assert requested_choice({}) == "avx2" and requested_choice({CHOICE_VARIABLE: " Native "}) == "native"
    with pytest.raises(ValueError, match="avx2, native"):
        requested_choice({CHOICE_VARIABLE: "avx512"})


def _kernels_after(start: str, extra_env: dict[str, str]) -> str:
    """The kernels a process that starts with `start` ends up with (torch's own report for ATen)."""
    env = {k: v for k, v in os.environ.items() if k not in PINNED and k != CHOICE_VARIABLE}
    env.update(extra_env, PYTHONPATH=str(REPO_ROOT))
    code = f"{start}\nfrom mtl_robust.cpu_kernels import kernel_isa\nprint(kernel_isa())"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(not ON_X86, reason="the instruction-set variables exist on x86 only")
def test_entry_points_pin_the_kernels_before_torch_chooses_them() -> None:
    import torch

    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("a CPU without AVX2 runs its own kernels whatever is pinned")
    # ATen's capability is what torch really dispatches to: AVX2 even on an AVX-512 machine
    assert _kernels_after("import mtl_robust.train", {}) == "aten=AVX2 onednn=AVX2 mkl=COMPATIBLE"
    start = "from mtl_robust.cpu_kernels import pin_instruction_set\npin_instruction_set()\nimport torch"
    native = _kernels_after(start, {CHOICE_VARIABLE: "native"})
    # the CPU's own choice (this test process is pinned by conftest, so it cannot say what that is)
    assert native.endswith(" onednn=native mkl=native") and native.startswith(("aten=AVX2 ", "aten=AVX512 "))


@pytest.mark.parametrize("entry", ["train", "attack", "pipeline", "plan"])
def test_every_entry_point_pins_before_its_first_other_import(entry: str) -> None:
    """Console scripts load these modules too; anything imported before the pin could load torch."""
    tree = ast.parse((REPO_ROOT / "mtl_robust" / f"{entry}.py").read_text())
    statements = [
        n for n in tree.body if not isinstance(n, ast.Expr) or not isinstance(n.value, ast.Constant)
    ]
    first, call = statements[0], statements[1]
    assert isinstance(first, ast.ImportFrom) and first.module == "mtl_robust.cpu_kernels"
    assert isinstance(call, ast.Expr) and ast.unparse(call) == "pin_instruction_set()"


def test_the_kernel_setting_is_part_of_the_training_key(tmp_path: Path, monkeypatch) -> None:
    from mtl_robust.jobs.pipeline import training_key
    from mtl_robust.jobs.runner import runtime_info

    cfg = compose_config("pipeline", ["experiment=smoke"], tmp_path)
    keys = set()
    for onednn in ("AVX2", None):
        for mkl in ("COMPATIBLE", None):
            for name, value in (("ONEDNN_MAX_CPU_ISA", onednn), ("MKL_CBWR", mkl)):
                if value is None:
                    monkeypatch.delenv(name, raising=False)
                else:
                    monkeypatch.setenv(name, value)
            monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
            monkeypatch.delenv("MKL_ENABLE_INSTRUCTIONS", raising=False)
            assert runtime_info(cfg)["cpu_isa"].endswith(f"onednn={onednn or 'native'} mkl={mkl or 'native'}")
            keys.add(training_key(cfg))
    assert len(keys) == 4
