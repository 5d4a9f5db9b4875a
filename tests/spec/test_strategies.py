"""Samplers and pruners built from the spec's options, as every worker builds them."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpo.spec.strategies import SpaceFacts, SuccessiveHalvingOptions, TPEOptions, build_pruner, build_sampler


@pytest.mark.parametrize("group,conditional,expected", [
    (None, True, True),   # the default: groups exactly when some parameters are conditional
    (None, False, False),
    (True, False, True),  # an explicit choice wins
    (False, True, False),
])
def test_tpe_models_groups_when_the_space_is_conditional(group, conditional, expected):
    sampler = build_sampler(TPEOptions(group=group), space=SpaceFacts(conditional=conditional))
    assert sampler._group is expected


def test_the_digits_space_is_conditional_and_a_flat_one_is_not(tmp_path):
    from hpo.spec import load_spec
    from hpo.spec.space import space_facts

    digits = load_spec(Path(__file__).resolve().parents[2] / "search_spaces" / "digits_cnn.yaml")
    assert space_facts(digits).conditional  # when: on momentum, repeat: on filters
    flat = tmp_path / "flat.yaml"
    flat.write_text("name: f\nmodel: {name: mlp}\nsearch: {train.lr: {low: 1.0e-4, high: 0.1, log: true}}\n")
    assert not space_facts(load_spec(flat)).conditional


@pytest.mark.parametrize("rank", [0, 2**31, 2**40 + 3])
def test_the_largest_seed_plus_any_rank_builds_a_sampler(rank):
    """numpy refuses seeds of 2**32 and more; seed + rank wraps round instead."""
    from hpo.spec.strategies import RandomOptions
    from hpo.training.config import MAX_SEED

    for options in (TPEOptions(seed=MAX_SEED), RandomOptions(seed=MAX_SEED)):
        sampler = build_sampler(options, rank=rank)
        assert sampler is not None


def _pruned_at(pruner, curves):
    """The epoch at which ``pruner`` stops each curve in turn (None: it ran them all), and
    the study."""
    import optuna

    study = optuna.create_study(direction="maximize", pruner=pruner)
    stops = []
    for curve in curves:
        trial, stop = study.ask(), None
        for epoch, value in enumerate(curve, 1):
            trial.report(value, epoch)
            if trial.should_prune():
                stop = epoch
                break
        if stop is None:
            study.tell(trial, max(curve))
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        stops.append(stop)
    return stops, study


def test_the_default_pruner_halves_at_2_4_8_16_epochs():
    pruner = build_pruner(SuccessiveHalvingOptions(), max_epochs=16)
    assert (pruner._min_resource, pruner._reduction_factor, pruner._min_early_stopping_rate) == (2, 2, 0)
    first = [0.5, 0.6, 0.7] + [0.8] * 13
    bad = [0.1] * 16
    quick_then_flat = [0.6, 0.7] + [0.7] * 14  # the best at epoch 2, behind the first at 4
    better = [0.5, 0.65, 0.75] + [0.9] * 13
    # The first trial at a rung is kept; a later one must be among the better half there.
    stops, study = _pruned_at(pruner, [first, bad, quick_then_flat, better])
    assert stops == [None, 2, 4, None]
    rungs = {key: value for key, value in study.trials[3].system_attrs.items() if "rung" in key}
    assert rungs == {"completed_rung_0": 0.65, "completed_rung_1": 0.9, "completed_rung_2": 0.9,
                     "completed_rung_3": 0.9}  # epochs 2, 4, 8, 16


def test_the_default_pruner_never_stops_a_trial_shorter_than_its_first_rung():
    pruner = build_pruner(SuccessiveHalvingOptions(), max_epochs=1)
    assert _pruned_at(pruner, [[0.9], [0.1], [0.05]])[0] == [None, None, None]
