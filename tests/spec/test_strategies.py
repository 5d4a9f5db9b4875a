"""Samplers and pruners built from the spec's options, as every worker builds them."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpo.spec.strategies import SpaceFacts, TPEOptions, build_sampler


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
