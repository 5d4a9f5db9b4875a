"""``sampler: {name: random, unique: true}`` and ``budget.n_trials: 20%`` on finite spaces.

The space below compares two model families, each with its own conditional parameters (a
width for the MLP; a block count and one filter count per block for the CNN): 6 + 6 = 12
configurations, where plain random sampling ran one configuration several times.
"""

from __future__ import annotations

import optuna
import pytest
from click.testing import CliRunner

from hpo.cli.main import cli
from hpo.errors import SpecError
from hpo.spec import load_spec
from hpo.spec.space import preview, sample_config, space_facts, space_size
from hpo.spec.strategies import build_sampler

FAMILIES = """\
name: families
budget: {{n_trials: {n_trials}}}
sampler: {sampler}
pruner: {{name: none}}
data: {{name: digits}}
model: {{name: mlp, n_layers: 1, width: 16}}
train: {{epochs: 1, optimizer: adam}}
search:
  model.name: {{choices: [mlp, cnn]}}
  model.width: {{choices: [8, 16, 24, 32, 48, 64], when: {{model.name: mlp}}}}
  model.n_blocks: {{choices: [1, 2], when: {{model.name: cnn}}}}
  model.filters: {{choices: [8, 16], repeat: model.n_blocks, when: {{model.name: cnn}}}}
"""


def write(tmp_path, n_trials="12", sampler="{name: random, unique: true, seed: 0}", extra=""):
    path = tmp_path / "spec.yaml"
    path.write_text(FAMILIES.format(n_trials=n_trials, sampler=sampler) + extra)
    return path


def key(params):
    return tuple(sorted(params.items()))


def test_the_enumerated_configurations_are_those_trials_sample(tmp_path):
    spec = load_spec(write(tmp_path))
    enumerated = [key(c) for c in space_facts(spec).configurations]
    assert len(enumerated) == len(set(enumerated)) == space_size(spec) == 12
    drawn = {key(params) for params, _config in preview(spec, 300)}
    assert drawn == set(enumerated)


def run_trials(spec, n, rank=0, storage=None):
    storage = storage or optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="families", storage=storage, load_if_exists=True,
                                sampler=build_sampler(spec.sampler, rank=rank, space=space_facts(spec)))
    for _ in range(n):
        trial = study.ask()
        sample_config(trial, spec)
        study.tell(trial, 0.0)
    return [t.params for t in study.get_trials(deepcopy=False)]


def test_unique_random_runs_every_configuration_once(tmp_path):
    spec = load_spec(write(tmp_path))
    ran = [key(p) for p in run_trials(spec, 12)]
    assert len(set(ran)) == 12
    # Plain random sampling, same seed and space, repeats configurations: what unique fixes.
    plain = load_spec(write(tmp_path, sampler="{name: random, seed: 0}"))
    assert len({key(p) for p in run_trials(plain, 12)}) < 12


def test_workers_taking_turns_share_out_the_configurations(tmp_path):
    """Four workers (ranks) on one study, one trial each in turn, then round again."""
    spec = load_spec(write(tmp_path))
    storage = optuna.storages.InMemoryStorage()
    for _ in range(3):
        for rank in range(4):
            run_trials(spec, 1, rank=rank, storage=storage)
    ran = [key(p) for p in optuna.load_study(study_name="families", storage=storage).trials
           for p in [p.params]]
    assert len(ran) == len(set(ran)) == 12


def test_a_queued_partial_set_gets_an_unused_configuration_that_agrees_with_it(tmp_path):
    spec = load_spec(write(tmp_path))
    storage = optuna.storages.InMemoryStorage()
    run_trials(spec, 10, storage=storage)
    study = optuna.load_study(study_name="families", storage=storage)
    used = {key(t.params) for t in study.trials}
    left = [c for c in space_facts(spec).configurations if key(c) not in used]
    study.enqueue_trial({"model.name": left[0]["model.name"]})
    (params,) = run_trials(spec, 1, storage=storage)[-1:]
    assert key(params) not in used and params["model.name"] == left[0]["model.name"]


def test_once_every_configuration_ran_they_repeat_with_a_warning(tmp_path):
    spec = load_spec(write(tmp_path))
    storage = optuna.storages.InMemoryStorage()
    run_trials(spec, 12, storage=storage)
    with pytest.warns(UserWarning, match="every configuration of the search space has been used"):
        (params,) = run_trials(spec, 1, storage=storage)[-1:]
    assert key(params) in {key(c) for c in space_facts(spec).configurations}


def test_unique_needs_a_finite_space(tmp_path):
    path = write(tmp_path, extra="  train.weight_decay: {low: 1.0e-6, high: 1.0e-2, log: true}\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert caught.value.problems == [
        f"{path}:13: search.train.weight_decay: sampler.unique needs a finite search space, and a float "
        "range without a step has endless values (got 'train.weight_decay'; expected choices: [...] or a step)"]


def test_int_and_stepped_ranges_are_finite(tmp_path):
    path = write(tmp_path, n_trials="100%",
                 extra="  train.lr: {low: 0.01, high: 0.05, step: 0.01}\n  train.epochs: {low: 1, high: 3}\n")
    spec = load_spec(path)
    assert space_size(spec) == 12 * 5 * 3 == spec.budget.n_trials
    values = {p["train.lr"] for p in run_trials(spec, 30)}
    assert len(values) == 5 and all(0.01 <= v <= 0.05 + 1e-12 for v in values)


def test_unique_refuses_a_space_too_large_to_keep_track_of(tmp_path):
    five = "{choices: [1, 2, 3, 4, 5]}"
    path = tmp_path / "big.yaml"
    path.write_text("name: big\nbudget: {n_trials: 10}\nsampler: {name: random, unique: true}\nmodel: {name: mlp}\n"
                    f"search:\n  model.n_layers: {five}\n  train.epochs: {five}\n  train.seed: {five}\n"
                    "  train.batch_size: {choices: [16, 32, 64, 128, 256]}\n  model.width: {low: 8, high: 207}\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert caught.value.problems == [
        f"{path}:3: sampler.unique: the search space has 125000 configurations, more than unique random "
        "sampling keeps track of (20000) (got true; expected unique: false (in a space this large repeats are "
        "rare), or fewer values)"]


def test_unique_budget_cannot_exceed_the_space(tmp_path):
    path = write(tmp_path, n_trials="13")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert caught.value.problems == [
        f"{path}:2: budget.n_trials: the search space has 12 configurations, fewer than budget.n_trials "
        "(got 13; expected budget.n_trials <= 12 (or 100%), or unique: false)"]


@pytest.mark.parametrize("share,expected", [("20%", 3), ("50%", 6), ("100%", 12), ("1%", 1), ("12.5%", 2)])
def test_a_share_of_the_space_resolves_to_trials_rounded_up(tmp_path, share, expected):
    spec = load_spec(write(tmp_path, n_trials=share))
    assert spec.budget.n_trials == expected  # ceil(share x 12)


def test_a_share_works_with_the_grid_and_with_any_sampler_on_a_finite_space(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: g\nbudget: {n_trials: 20%}\nsampler: {name: grid}\nmodel: {name: mlp}\nsearch:\n"
                    "  train.lr: {choices: [0.1, 0.01, 0.001]}\n  train.batch_size: {choices: [32, 64, 128, 256]}\n"
                    "  model.width: {choices: [16, 32, 64, 128, 256]}\n")
    assert load_spec(grid).budget.n_trials == 12  # 20% of 60
    assert load_spec(write(tmp_path, n_trials="25%", sampler="{name: tpe}")).budget.n_trials == 3


def test_a_share_needs_a_finite_space_and_a_share_up_to_100(tmp_path):
    path = write(tmp_path, n_trials="20%", sampler="{name: random}",
                 extra="  train.weight_decay: {low: 1.0e-6, high: 1.0e-2, log: true}\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert caught.value.problems == [
        f"{path}:2: budget.n_trials: a share needs a finite search space, and train.weight_decay is a float "
        "range without a step (got '20%'; expected a number of trials, or choices or a step for train.weight_decay)"]
    with pytest.raises(SpecError, match=r"budget.n_trials: a share of the search space is above 0% and at most "
                       r"100% \(got '150%'"):
        load_spec(write(tmp_path, n_trials="150%"))


def test_space_preview_shows_the_resolved_budget(tmp_path):
    result = CliRunner().invoke(cli, ["space", "preview", str(write(tmp_path, n_trials="20%")), "-n", "1"])
    assert result.exit_code == 0, result.output
    assert "budget: 3 trials of the search space's 12 configurations" in result.output


def test_a_queued_key_asked_late_is_kept_and_no_configuration_runs_twice(tmp_path):
    """model.width is asked after model.name: the queued width must steer the first pick."""
    spec = load_spec(write(tmp_path))
    storage = optuna.storages.InMemoryStorage()
    run_trials(spec, 0, storage=storage)
    study = optuna.load_study(study_name="families", storage=storage)
    widths = [8, 16, 24, 32, 48, 64]
    for width in widths:
        study.enqueue_trial({"model.width": width})
    queued = run_trials(spec, 6, storage=storage)
    assert queued == [{"model.name": "mlp", "model.width": w} for w in widths]
    ran = [key(p) for p in run_trials(spec, 6, storage=storage)]
    assert len(ran) == len(set(ran)) == 12


def _ask_first_value(study, sampler, spec):
    """A trial that has written only its first parameter (model.name), still running."""
    study.sampler = sampler
    trial = study.ask()
    trial.suggest_categorical("model.name", spec.search["model.name"].labels())
    return trial


def test_a_running_trial_with_part_of_its_configuration_written_counts_as_used(tmp_path):
    """Two workers on separate machines (both rank 0, same seed) falling back at once."""
    spec = load_spec(write(tmp_path))
    facts = space_facts(spec)
    storage = optuna.storages.InMemoryStorage()
    run_trials(spec, 0, storage=storage)
    study = optuna.load_study(study_name="families", storage=storage)
    first = build_sampler(spec.sampler, rank=0, space=facts)
    order = first._shared_order(study)
    configurations = [facts.configurations[i] for i in order]
    # Trials 0..9 take the configurations the shuffle gave trials 2..11: trials 10 and 11
    # find theirs used and pick among the two left, order[0] and order[1].
    for configuration in configurations[2:]:
        study.enqueue_trial(configuration)
    run_trials(spec, 10, storage=storage)
    left = {key(c) for c in configurations[:2]}
    second = build_sampler(spec.sampler, rank=0, space=facts)
    one = _ask_first_value(study, first, spec)
    other = _ask_first_value(study, second, spec)
    for trial, sampler in ((one, first), (other, second)):
        study.sampler = sampler
        sample_config(trial, spec)
    assert {key(one.params), key(other.params)} == left


def test_a_queued_float_matches_the_stepped_value_it_stands_for(tmp_path):
    """0.3 queued, 0.30000000000000004 (2 * 0.1 + 0.1) enumerated: one configuration."""
    path = write(tmp_path, n_trials="100%",
                 extra="  train.lr: {low: 0.1, high: 0.5, step: 0.1}\n")
    spec = load_spec(path)
    assert spec.budget.n_trials == 12 * 5
    storage = optuna.storages.InMemoryStorage()
    run_trials(spec, 0, storage=storage)
    study = optuna.load_study(study_name="families", storage=storage)
    study.enqueue_trial({"model.name": "mlp", "model.width": 8, "train.lr": 0.3})
    (queued,) = run_trials(spec, 1, storage=storage)
    assert queued["train.lr"] == 0.3
    ran = run_trials(spec, 59, storage=storage)
    steps = [(p["model.name"], p.get("model.width"), p.get("model.n_blocks"),
              tuple(p.get(f"model.filters[{i}]") for i in range(2)), round((p["train.lr"] - 0.1) / 0.1))
             for p in ran]
    assert len(steps) == len(set(steps)) == 60
