"""Seconds of counted work on a device: measured (a calibration of the backbone on this machine, or one a
user measured on the target machine and copied here) or modelled (a named GPU's roofline).

Measured: a layout's forward, input-gradient backward and training step cost the reference layout's timed
medians times the ratio of their counted FLOPs; the range is the repeats' fastest and slowest.
Modelled: each forward-equivalent of FLOPs takes max(FLOPs / peak, bytes / bandwidth) / efficiency, peak
at the run's precision (bf16, else TF32, PyTorch's default for convolutions), the range over efficiency.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from mtl_robust.config_location import CONFIG_DIR
from mtl_robust.planning.calibrate import Calibration
from mtl_robust.planning.cost import Work
from mtl_robust.planning.flops import BACKWARD_FLOPS, TRAIN_BACKWARD_FLOPS

DEVICES_FILE = Path(CONFIG_DIR) / "planner" / "devices.yaml"


@dataclass(frozen=True)
class Seconds:
    low: float
    mid: float
    high: float

    def __add__(self, other: Seconds | float) -> Seconds:
        if isinstance(other, Seconds):
            return Seconds(self.low + other.low, self.mid + other.mid, self.high + other.high)
        return Seconds(self.low + other, self.mid + other, self.high + other)

    __radd__ = __add__


ZERO = Seconds(0.0, 0.0, 0.0)


@cache
def named_devices() -> dict[str, Any]:
    return yaml.safe_load(DEVICES_FILE.read_text())


def device_names() -> list[str]:
    return [k for k in named_devices() if k != "efficiency"]


def measured_seconds(cal: Calibration, work: Work, flops: float) -> Seconds:
    ratio = flops / cal.reference_flops

    def total(pick: Any) -> float:
        forward = pick(cal.forward)
        backward = max(pick(cal.gradient) - forward, 0.0)
        return ratio * (
            work.forwards * forward + work.backwards * backward + work.train_steps * pick(cal.train)
        )

    return Seconds(total(min), total(statistics.median), total(max))


@dataclass(frozen=True)
class NamedDevice:
    name: str
    label: str
    peak_tflops: float  # at the precision of the run
    precision: str
    bandwidth_tbs: float
    efficiency: tuple[float, float]

    @classmethod
    def get(cls, name: str, precision: str) -> NamedDevice:
        table = named_devices()
        if name not in table or name == "efficiency":
            raise ValueError(f"unknown device {name!r}; named devices: {', '.join(device_names())}")
        entry = table[name]
        key = "bf16" if precision in ("bf16", "16") else "tf32"
        lo, hi = table["efficiency"]
        return cls(name, entry["label"], float(entry[key]), key, float(entry["bandwidth"]), (lo, hi))

    def seconds(self, work: Work, flops: float, bytes_per_flop: float) -> Seconds:
        units = (
            work.forwards + work.backwards * BACKWARD_FLOPS + work.train_steps * (1 + TRAIN_BACKWARD_FLOPS)
        )
        ideal = units * max(
            flops / (self.peak_tflops * 1e12), flops * bytes_per_flop / (self.bandwidth_tbs * 1e12)
        )
        lo, hi = self.efficiency
        return Seconds(ideal / hi, ideal / statistics.mean((lo, hi)), ideal / lo)

    def describe(self) -> str:
        lo, hi = self.efficiency
        return (
            f"{self.label} modelled: {self.peak_tflops:g} TFLOP/s peak ({self.precision}), "
            f"{self.bandwidth_tbs:g} TB/s, {lo:g}-{hi:g} of the roofline"
        )
