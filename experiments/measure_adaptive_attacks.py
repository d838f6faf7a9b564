"""EOT and BPDA against masked versions of one trained model: what a gradient attack measures with and
without them, beside the same network unmasked (docs/adaptive_attacks.md).

    python experiments/measure_adaptive_attacks.py --ckpt logs/checkpoints/<key>.ckpt [--sigma 0.0627]

The checkpoint is any model trained here (e.g. one of the smoke studies' cached checkpoints); the data is
the smoke scale's validation split. Masked versions of the network:
  * noisy: Gaussian noise (std `--sigma`) added to the input at evaluation time too (a randomised defense);
    attacked with eot_samples 1, 4 and 16;
  * quantised: the input rounded to `--levels` levels (zero input gradient); attacked plainly and with BPDA
    on the quantiser.
Prints the average relative change (%) per attack, DGBA at 8/255, PGD-10 and APGD-10. The noisy model's
clean and adversarial passes each run with a fixed seed; its clean value moves with the noise draw too,
which the repeat of its clean pass with other seeds shows.
"""

from __future__ import annotations

import argparse

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader

from mtl_robust.attacks.bpda import with_bpda
from mtl_robust.attacks.config import attack_from_config
from mtl_robust.evaluation.ensemble_cell import ensemble_cell
from mtl_robust.evaluation.passes import run_pass
from mtl_robust.evaluation.relative import compare
from mtl_robust.lightning.module import load_module
from mtl_robust.planning.sweep import compose_job


class NoisyInput(nn.Module):
    def __init__(self, net: nn.Module, sigma: float) -> None:
        super().__init__()
        self.net, self.sigma = net, sigma

    def forward(self, x: Tensor, tasks=None) -> dict[str, Tensor]:
        return self.net(x + self.sigma * torch.randn_like(x), tasks=tasks)


class Quantiser(nn.Module):
    def __init__(self, levels: int) -> None:
        super().__init__()
        self.levels = levels

    def forward(self, x: Tensor) -> Tensor:
        return torch.round(x * self.levels) / self.levels


class Quantised(nn.Module):
    def __init__(self, net: nn.Module, levels: int) -> None:
        super().__init__()
        self.quantise, self.net = Quantiser(levels), net

    def forward(self, x: Tensor, tasks=None) -> dict[str, Tensor]:
        return self.net(self.quantise(x), tasks=tasks)


def ensemble_measures(model: nn.Module, tasks, batches, eot: int) -> dict[str, float]:
    """The quick ensemble's members (each with `eot` samples) and its joint worst case on `model`."""
    preset = compose_job(["+scale=smoke", "attack=ensemble_quick"]).attack
    config = OmegaConf.to_container(preset, resolve=True)
    for member in config["members"].values():
        member["eot_samples"] = eot
    cell = ensemble_cell(config, tasks)
    torch.manual_seed(0)
    clean = run_pass(model, tasks, batches(), progress=False)
    torch.manual_seed(0)
    run_pass(model, tasks, batches(), attack=cell.attack, progress=False)
    ensemble = cell.attack.row_results(clean)["ensemble"]
    out = {m: round(100 * v["rel_avg"], 2) for m, v in ensemble["members"].items()}
    out["ensemble (joint)"] = round(100 * ensemble["rules"]["joint"]["rel_avg"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--sigma", type=float, default=16 / 255)
    parser.add_argument("--levels", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ensemble", action="store_true", help="also the quick ensemble, per member")
    parser.add_argument("--skip-single", action="store_true", help="leave out the PGD/APGD table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    module = load_module(args.ckpt)
    tasks, net = module.tasks, module.model
    cfg = compose_job(["+scale=smoke"])
    dataset = instantiate(cfg.data).dataset("val")

    def batches():
        return DataLoader(dataset, batch_size=64, shuffle=False)

    def measure(model: nn.Module, attack_cfg: dict | None, seed: int = 0) -> tuple[float, dict]:
        torch.manual_seed(seed)
        clean = run_pass(model, tasks, batches(), progress=False)
        if attack_cfg is None:
            return 0.0, clean.metrics
        attack = attack_from_config({"eps": 8 / 255, "steps": 10, **attack_cfg}, "dgba")
        torch.manual_seed(seed)
        adv = run_pass(model, tasks, batches(), attack=attack.with_losses(tasks), progress=False)
        directions = {t: task.higher_is_better for t, task in tasks.items()}
        return 100 * compare(clean.metrics, adv.metrics, directions).average, clean.metrics

    noisy = NoisyInput(net, args.sigma)
    quantised = Quantised(net, args.levels)
    print(f"checkpoint {args.ckpt}; noise std {args.sigma:.4f}; quantiser {args.levels} levels; DGBA, 8/255")
    print(f"{'model':<28} {'attack':<18} {'rel avg %':>10}")
    for method in () if args.skip_single else ("pgd", "apgd"):
        rows = [("deterministic", net, {"method": method})]
        rows += [(f"noisy, eot_samples={k}", noisy, {"method": method, "eot_samples": k}) for k in (1, 4, 16)]
        rows += [("quantised", quantised, {"method": method})]
        rows += [("quantised + BPDA", with_bpda(quantised, ["quantise"]), {"method": method})]
        for name, model, attack_cfg in rows:
            value, _ = measure(model, attack_cfg)
            print(f"{name:<28} {method + '-10':<18} {value:>10.2f}", flush=True)
    if args.ensemble:
        print("\nensemble_quick (APGD-10 members), rel avg % per member and of the joint selection")
        through = with_bpda(quantised, ["quantise"])
        for name, model, eot in [
            ("deterministic", net, 1),
            ("noisy, eot_samples=1", noisy, 1),
            ("noisy, eot_samples=4", noisy, 4),
            ("quantised", quantised, 1),
            ("quantised + BPDA", through, 1),
        ]:
            print(name, ensemble_measures(model, tasks, batches, eot), flush=True)
    directions = {t: task.higher_is_better for t, task in tasks.items()}
    _, reference = measure(noisy, None, 0)
    for seed in (1, 2):  # how much the noisy model's clean metrics move with the draw alone
        _, metrics = measure(noisy, None, seed)
        drift = 100 * compare(reference, metrics, directions).average
        print(f"noisy model, clean pass with seed {seed} vs seed 0: rel avg {drift:.2f} %")


if __name__ == "__main__":
    main()
