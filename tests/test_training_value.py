"""The training procedure as a value (values/training.py): one parser of the defense and mtl configs, its
text form the row name defenses had before it existed, and a parser of that text for the reports."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from mtl_robust.report.uncertainty import clean_counterpart, pgd_at_like
from mtl_robust.values.norm import Norm
from mtl_robust.values.training import DefenseSpec, TrainingProcedure

# Every option of the defense group and the settings a name shows, with the name rows have always had
# (checked against the code before the value existed: stores and checkpoint keys keep these names).
NAMES = [
    ([], "none"),
    (["defense=none"], "none"),
    (["defense=adv_train"], "adv_train:pgd-total"),
    (["defense=adv_train_adv_only"], "adv_train[adv_only]:pgd-total"),
    (["defense=fgsm_rs"], "fgsm_rs:total"),
    (["defense=fgsm_rs_gradalign"], "fgsm_rs[gradalign=0.2]:total"),
    (["defense=free_at"], "free_at:total"),
    (["defense=n_fgsm"], "n_fgsm:total"),
    (["defense=dgba/adv_train"], "adv_train:pgd-dgba"),
    (["defense=dgba/adv_train_adv_only"], "adv_train[adv_only]:pgd-dgba"),
    (["defense=dgba/fgsm_rs"], "fgsm_rs:dgba"),
    (["defense=dgba/fgsm_rs_gradalign"], "fgsm_rs[gradalign=0.2]:dgba"),
    (["defense=dgba/free_at"], "free_at:dgba"),
    (["defense=dgba/n_fgsm"], "n_fgsm:dgba"),
    (["defense=adv_train", "defense.mode=mixed"], "adv_train[mixed=0.5]:pgd-total"),
    (
        ["defense=adv_train", "defense.mode=mixed", "defense.mix_weight=0.25"],
        "adv_train[mixed=0.25]:pgd-total",
    ),
    (["defense=adv_train", "+defense.attack.norm=l2", "defense.attack.eps=0.5"], "adv_train:pgd[l2]-total"),
    (["defense=adv_train", "attack@defense.attack=mim"], "adv_train:mim-total"),
    (["defense=free_at", "defense.replays=8"], "free_at[m=8]:total"),
    (["defense=n_fgsm", "defense.eps=4/255"], "n_fgsm[eps=4/255]:total"),
    (["defense=n_fgsm", "+defense.craft=train"], "n_fgsm[craft=train]:total"),
    (["defense=fgsm_rs", "defense.alpha=8/255"], "fgsm_rs[alpha=1eps]:total"),
    (["defense=n_fgsm", "defense.noise=1/255"], "n_fgsm[noise=0.125eps]:total"),
    (
        ["defense=fgsm_rs", "defense.direction.name=single", "+defense.direction.task=seg"],
        "fgsm_rs:single:seg",
    ),
    (
        ["defense=adv_train", "defense.direction.name=single", "+defense.direction.task=seg"],
        "adv_train:pgd-single:seg",
    ),
    (
        ["defense=adv_train", "defense.direction.name=dgba", "+defense.direction.tau=1e-6"],
        "adv_train:pgd-dgba:1e-06",
    ),
    (["defense=fgsm_rs_gradalign", "defense.alpha=12/255"], "fgsm_rs[alpha=1.5eps,gradalign=0.2]:total"),
]


def procedure_of(cfg) -> TrainingProcedure:
    def part(name: str):
        return OmegaConf.to_container(cfg[name], resolve=True) if cfg.get(name) else None

    return TrainingProcedure.from_config(part("defense"), part("mtl"))


@pytest.mark.parametrize(("overrides", "name"), NAMES, ids=[n for _, n in NAMES])
def test_every_defense_config_keeps_its_name_and_reads_back(compose, overrides, name) -> None:
    procedure = procedure_of(compose(overrides))
    assert str(procedure) == name
    parsed = TrainingProcedure.parse(name)
    assert parsed == procedure, "the text form does not read back to the spec the config gave"
    assert str(parsed) == name


def test_fast_settings_read_back_as_numbers() -> None:
    spec = DefenseSpec.parse("fgsm_rs[eps=4/255,alpha=1.5eps,gradalign=0.2]:dgba")
    assert spec.fast is not None
    assert spec.fast.eps == pytest.approx(4 / 255) and spec.fast.alpha == pytest.approx(6 / 255)
    assert spec.fast.grad_align == 0.2 and spec.direction == "dgba"
    assert DefenseSpec.parse("free_at[m=8]:single:seg").optimizer_steps_per_batch == 8
    assert DefenseSpec.parse("adv_train:pgd-total").optimizer_steps_per_batch == 2
    l2 = DefenseSpec.parse("adv_train[adv_only]:pgd[l2]-dgba:1e-06")
    assert (l2.norm, l2.mode, l2.direction, l2.attack_method) == (Norm("l2"), "adv_only", "dgba:1e-06", "pgd")


@pytest.mark.parametrize("method", ["pcgrad", "uw", "nash_mtl"])
def test_a_multi_task_method_other_than_ew_is_appended(method) -> None:
    procedure = TrainingProcedure.from_config(
        {"name": "adv_train", "attack": {"method": "pgd"}}, {"name": method}
    )
    assert str(procedure) == f"adv_train:pgd-total+{method}"
    assert TrainingProcedure.parse(str(procedure)) == procedure
    assert str(TrainingProcedure.from_config(None, {"name": "ew"})) == "none"
    assert str(TrainingProcedure.from_config(None, {"name": method})) == f"none+{method}"


@pytest.mark.parametrize(
    "text", ["", "adv_train", "fgsm_fast:total", "adv_train[sometimes]:pgd-total", "pgd-total"]
)
def test_a_name_that_is_no_procedure_is_refused_or_read_as_none(text) -> None:
    with pytest.raises(ValueError):
        TrainingProcedure.parse(text)
    assert TrainingProcedure.read(text) is None


def test_reports_pair_procedures_by_the_value_not_by_string_prefixes() -> None:
    assert pgd_at_like("fgsm_rs[gradalign=0.2]:dgba") == "adv_train[adv_only]:pgd-dgba"
    assert pgd_at_like("free_at[m=8]:single:seg+pcgrad") == "adv_train[adv_only]:pgd-single:seg+pcgrad"
    assert pgd_at_like("adv_train:pgd-total") is None and pgd_at_like("my model") is None
    assert clean_counterpart("adv_train:pgd-dgba+uw") == "none+uw"
    assert clean_counterpart("fgsm_rs:total") == "none" and clean_counterpart("none") == "none"
