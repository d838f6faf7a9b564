"""A trained model's recipe: equal for the seeds of one procedure, different for any training setting, and
carried from the config into the checkpoint and every row of the model."""

from __future__ import annotations

from mtl_robust.values.recipe import TrainingRecipe, differing_settings, format_settings


def _recipe(compose, overrides: list[str]) -> TrainingRecipe:
    from mtl_robust.jobs.recipe import training_recipe

    return training_recipe(compose(["experiment=smoke", *overrides], config_name="pipeline"))


def test_seeds_share_a_recipe_and_every_training_setting_changes_it(compose) -> None:
    base = _recipe(compose, ["seed=0"])
    assert _recipe(compose, ["seed=7"]) == base  # the synthetic train split's seed is the run's seed too
    assert "<seed>" in base.settings.values()
    for override in (
        "train.max_epochs=3",
        "defense=adv_train",
        "sharing=independent",
        "train.optimizer.lr=0.01",
        "data.dataset.height=48",
    ):
        other = _recipe(compose, ["seed=0", override])
        assert other.fingerprint != base.fingerprint, override


def test_two_pgd_at_budgets_are_two_recipes_told_apart_by_their_setting(compose) -> None:
    at4 = _recipe(compose, ["defense=adv_train", "defense.attack.eps=4/255"])
    at8 = _recipe(compose, ["defense=adv_train", "defense.attack.eps=8/255"])
    assert at4.fingerprint != at8.fingerprint
    assert differing_settings([at4, at8]) == ["defense.attack.eps"]
    assert format_settings(at4, ["defense.attack.eps"]) == "defense.attack.eps=4/255"
    # one budget written three ways is one recipe
    assert _recipe(compose, ["defense=adv_train", "defense.attack.pixel_eps=4"]) == at4
    assert _recipe(compose, ["defense=adv_train", f"defense.attack.eps={4 / 255}"]) == at4
    # a defense comparison lets the defense differ and nothing else
    clean = _recipe(compose, [])
    assert at8.without(["defense."]) == clean.without(["defense."])


def test_where_things_are_is_not_part_of_the_recipe(compose) -> None:
    base = _recipe(compose, [])
    assert _recipe(compose, ["data.num_workers=2", "data.eval_batch_size=3"]) == base
    assert not [k for k in base.settings if k.endswith(".root") or k.startswith("data.splits.val")]


def test_old_rows_have_no_recipe() -> None:
    assert TrainingRecipe.from_row(None) is None
    assert TrainingRecipe.from_row({}) is None
    assert TrainingRecipe.from_row({"a": 1}) == TrainingRecipe({"a": 1})


def test_training_key_still_includes_the_seed(compose) -> None:
    from mtl_robust.jobs.pipeline import training_key

    keys = {training_key(compose(["experiment=smoke", f"seed={s}"], config_name="pipeline")) for s in (0, 1)}
    assert len(keys) == 2


def test_a_clean_model_is_one_model_whatever_adversarial_settings_a_study_sets(compose) -> None:
    from mtl_robust.jobs.pipeline import training_key
    from mtl_robust.jobs.recipe import training_recipe

    study = ["experiment=study_directions_smoke", "sharing=all_shared", "seed=0"]
    clean = compose([*study, "defense=none"], config_name="pipeline")
    seeds = compose(["experiment=study_seeds_smoke", "sharing=all_shared", "seed=0"], config_name="pipeline")
    assert clean.defense.attack.steps == 2  # the study's AT settings reach the clean model's config ...
    assert training_key(clean) == training_key(seeds)  # ... and train nothing there: one cached model
    assert training_recipe(clean) == training_recipe(seeds)
    adv = compose([*study, "defense=adv_train"], config_name="pipeline")
    assert training_key(adv) != training_key(
        compose([*study, "defense=adv_train", "defense.attack.steps=10"], config_name="pipeline")
    )
