"""Searching augmentation: lists of steps as choices (readable labels for Optuna, decoded back
into the config), and per-step ``enabled`` flags searched as ``data.augment.<step>.enabled``."""

from __future__ import annotations

import optuna
import pytest

from hpo.errors import SpecError
from hpo.spec import load_spec
from hpo.spec.enqueue import enqueue_params
from hpo.spec.space import sample_config, space_facts, to_distribution
from hpo.training.augment import HFlip, Rotation
from tests.specs import write_spec

CHOICES = "{choices: [[], [hflip], [hflip, {name: rotation, degrees: 30}]]}"
LABELS = ["none", "hflip", "hflip+rotation(degrees=30)"]
GRAY = {"in_shape": (1, 8, 8), "mean": (0.5,), "std": (0.25,), "seed": 0}


def _spec(tmp_path, search, sampler="random", n_trials=3, data_augment=None):
    path = write_spec(tmp_path, "aug", sampler=sampler, n_trials=n_trials, search=search)
    if data_augment is not None:
        text = path.read_text().replace("split_seed: 0}", f"split_seed: 0, augment: {data_augment}}}")
        path.write_text(text)
    return load_spec(path)


def _errors(tmp_path, **options) -> list[str]:
    with pytest.raises(SpecError) as info:
        _spec(tmp_path, **options)
    return [line for line in str(info.value).splitlines() if line.strip()]


def _config_for(spec, params):
    """The trial config a trial with these (fixed) Optuna params resolves to."""
    study = optuna.create_study()
    distributions = {key: to_distribution(p) for key, p in spec.search.items()}
    study.enqueue_trial(params)
    trial = study.ask(distributions)
    return trial, sample_config(trial, spec)


def test_list_choices_are_readable_labels_for_optuna(tmp_path):
    spec = _spec(tmp_path, {"data.augment": CHOICES})
    assert list(to_distribution(spec.search["data.augment"]).choices) == LABELS


@pytest.mark.parametrize("label", LABELS)
def test_a_sampled_label_decodes_into_the_steps_it_names(tmp_path, label):
    from hpo.training.augment_ops import Augment, build_augment

    spec = _spec(tmp_path, {"data.augment": CHOICES})
    trial, config = _config_for(spec, {"data.augment": label})
    assert trial.params["data.augment"] == label
    built = build_augment(config.data.augment, **GRAY)
    if label == "none":
        assert config.data.augment == [] and built is None
        return
    assert isinstance(built, Augment)
    expected = [HFlip()] if label == "hflip" else [HFlip(), Rotation(degrees=30)]
    assert list(built.steps) == expected


def test_the_grid_sampler_enumerates_every_list(tmp_path):
    spec = _spec(tmp_path, {"data.augment": CHOICES}, sampler="grid")
    assert space_facts(spec).grid == {"data.augment": LABELS}
    from hpo.spec.strategies import build_sampler

    study = optuna.create_study(sampler=build_sampler(spec.sampler, rank=0, space=space_facts(spec)))
    seen = []
    for _ in range(3):
        trial = study.ask()
        seen.append(sample_config(trial, spec).data.augment)
        study.tell(trial, 0.0)
    assert sorted(map(len, seen)) == [0, 1, 2]


def test_an_unknown_step_among_choices_is_one_line_naming_its_place(tmp_path):
    errors = _errors(tmp_path, search={"data.augment": "{choices: [[hflip], [hflip, rotaton]]}"})
    assert len(errors) == 1, errors
    assert "search.data.augment.choices[1]" in errors[0]
    assert "rotation" in errors[0] and "rotaton" in errors[0]


def test_choices_meaning_the_same_steps_are_refused_as_repeats(tmp_path):
    errors = _errors(tmp_path, search={"data.augment": "{choices: [none, [], [hflip]]}"})
    assert any("search.data.augment.choices" in e and "repeat" in e for e in errors), errors


def test_enqueue_takes_the_list_or_its_label(tmp_path):
    spec = _spec(tmp_path, {"data.augment": CHOICES})
    entry = {"data.augment": ["hflip", {"name": "rotation", "degrees": 30}]}
    assert enqueue_params(spec, entry) == {"data.augment": LABELS[2]}
    assert enqueue_params(spec, {"data.augment": "hflip"}) == {"data.augment": "hflip"}


FLAGGED = "[hflip, {name: rotation, degrees: 15, enabled: true}]"


@pytest.mark.parametrize("enabled", [True, False])
def test_a_searched_enabled_flag_toggles_its_step(tmp_path, enabled):
    from hpo.training.augment_ops import build_augment

    spec = _spec(tmp_path, {"data.augment.rotation.enabled": "{choices: [true, false]}"},
                 data_augment=FLAGGED)
    _, config = _config_for(spec, {"data.augment.rotation.enabled": enabled})
    built = build_augment(config.data.augment, **GRAY)
    assert built is not None
    expected = [HFlip(), Rotation(degrees=15)] if enabled else [HFlip()]
    assert list(built.steps) == expected


def test_a_disabled_only_step_means_no_augmentation(tmp_path):
    from hpo.training.augment_ops import build_augment

    spec = _spec(tmp_path, {"data.augment.rotation.enabled": "{choices: [true, false]}"},
                 data_augment="[rotation]")
    _, config = _config_for(spec, {"data.augment.rotation.enabled": False})
    assert build_augment(config.data.augment, **GRAY) is None


def test_a_step_parameter_can_be_searched_by_the_steps_name(tmp_path):
    spec = _spec(tmp_path, {"data.augment.rotation.degrees": "{low: 5.0, high: 30.0}"},
                 data_augment=FLAGGED)
    _, config = _config_for(spec, {"data.augment.rotation.degrees": 20.0})
    assert config.data.augment[1] == Rotation(degrees=20.0)


def test_a_flag_for_a_step_not_in_data_augment_is_refused(tmp_path):
    errors = _errors(tmp_path, search={"data.augment.vflip.enabled": "{choices: [true, false]}"},
                     data_augment=FLAGGED)
    assert len(errors) == 1, errors
    assert "search.data.augment.vflip.enabled" in errors[0] and "hflip, rotation" in errors[0]


def test_a_flag_needs_a_list_of_steps(tmp_path):
    errors = _errors(tmp_path, search={"data.augment.hflip.enabled": "{choices: [true, false]}"},
                     data_augment="light")
    assert len(errors) == 1, errors
    assert "search.data.augment.hflip.enabled" in errors[0] and "list" in errors[0]


def test_a_bad_flag_value_is_refused(tmp_path):
    errors = _errors(tmp_path, search={"data.augment.rotation.degrees": "{low: 5.0, high: 500.0}"},
                     data_augment=FLAGGED)
    assert len(errors) == 1, errors
    assert "search.data.augment.rotation.degrees.high" in errors[0]


def test_a_tiny_digits_study_records_readable_augment_params(tmp_path, monkeypatch):
    import hpo
    from hpo.study.attrs import CONFIG
    from tests.specs import trials_of

    monkeypatch.delenv("HPO_STORAGE", raising=False)
    storage = str(tmp_path / "studies.journal")
    path = write_spec(tmp_path, "aug-e2e", sampler="grid", n_trials=3, search={"data.augment": CHOICES})
    hpo.create_study(path, storage=storage)
    hpo.run_worker("aug-e2e", storage=storage, device="cpu", progress=False, threads=1)
    trials = trials_of("aug-e2e", storage)
    assert sorted(t.params["data.augment"] for t in trials) == sorted(LABELS)
    assert all(t.state.name == "COMPLETE" for t in trials)
    by_label = {t.params["data.augment"]: t.user_attrs[CONFIG]["data"]["augment"] for t in trials}
    assert by_label["none"] == []
    assert [step["name"] for step in by_label[LABELS[2]]] == ["hflip", "rotation"]

    # A warm start reads the parent's recorded configs (every default filled in) back as the
    # choices they were, by their labels.
    child = write_spec(tmp_path, "aug-child", sampler="grid", n_trials=3, search={"data.augment": CHOICES})
    created = hpo.create_study(child, storage=storage, warm_start="aug-e2e", top=3)
    assert created.warm_start is not None
    assert created.warm_start.added == 3 and not created.warm_start.left_out
    assert sorted(q["data.augment"] for q in created.warm_start.queued) == sorted(LABELS)
    added = [t for t in trials_of("aug-child", storage) if t.state.is_finished()]
    assert sorted(t.params["data.augment"] for t in added) == sorted(LABELS)


def test_enqueue_in_the_spec_checks_lists_and_labels(tmp_path):
    path = write_spec(tmp_path, "aug", search={"data.augment": CHOICES})
    good = path.read_text() + "enqueue: [{data.augment: [hflip]}, {data.augment: none}]\n"
    path.write_text(good)
    spec = load_spec(path)
    assert [enqueue_params(spec, e) for e in spec.enqueue] == [{"data.augment": "hflip"}, {"data.augment": "none"}]
    path.write_text(good.replace("[hflip]}", "[vflip]}"))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 1 and "enqueue[0].data.augment" in lines[0]
    assert "one of: none, hflip, hflip+rotation(degrees=30)" in lines[0], lines


def test_a_flag_inside_a_searched_list_is_refused(tmp_path):
    errors = _errors(tmp_path, search={"data.augment": CHOICES,
                                       "data.augment.rotation.enabled": "{choices: [true, false]}"},
                     data_augment=FLAGGED)
    assert len(errors) == 1, errors
    assert "search.data.augment.rotation.enabled" in errors[0] and "not both" in errors[0]


def test_the_documented_flag_and_a_condition_on_it_sample_together(tmp_path):
    from hpo.spec.space import preview

    spec = _spec(tmp_path, {"data.augment.rotation.enabled": "{choices: [true, false]}",
                            "data.augment.rotation.degrees":
                                "{low: 5.0, high: 30.0, when: {data.augment.rotation.enabled: true}}"},
                 data_augment=FLAGGED)
    for params, config in preview(spec, 8):
        rotation = config["data"]["augment"][1]
        assert rotation.get("enabled", True) == params["data.augment.rotation.enabled"]
        assert ("data.augment.rotation.degrees" in params) == params["data.augment.rotation.enabled"]
        assert rotation["degrees"] == params.get("data.augment.rotation.degrees", 15)


def test_a_condition_names_a_list_choice_by_its_label(tmp_path):
    from hpo.spec.space import preview

    spec = _spec(tmp_path, {"data.augment": CHOICES,
                            "train.lr": "{low: 1.0e-4, high: 1.0e-1, log: true, when: {data.augment: none}}"})
    drawn = preview(spec, 12)
    assert {p["data.augment"] for p, _ in drawn} == set(LABELS)
    assert all(("train.lr" in p) == (p["data.augment"] == "none") for p, _ in drawn)


def test_a_recorded_list_is_read_back_as_the_choice_it_was(tmp_path):
    from hpo.spec.space import choice_of

    spec = _spec(tmp_path, {"data.augment": CHOICES})
    recorded = [{"name": "hflip", "p": 0.5}, {"name": "rotation", "degrees": 30.0}]
    assert choice_of(spec, "data.augment", recorded) == spec.search["data.augment"].choices[2]
    assert choice_of(spec, "data.augment", []) == []
    other = [{"name": "vflip", "p": 0.5}]
    assert choice_of(spec, "data.augment", other) == other


def test_a_condition_on_a_fixed_list_of_steps_is_checked_by_its_label(tmp_path):
    """Validation compares a fixed list with the condition as sampling does: by its label,
    defaults filled in (a fixed [hflip] is hflip(p=0.5), as a trial's config holds it)."""
    from hpo.spec.space import preview

    spec = _spec(tmp_path, {"train.lr": "{low: 1.0e-4, high: 1.0e-1, log: true, when: {data.augment: 'hflip(p=0.5)'}}"},
                 data_augment="[hflip]")
    assert all("train.lr" in params for params, _ in preview(spec, 4))
    # The label of the list as written is not what sampling compares: never true.
    errors = _errors(tmp_path, search={"train.lr": "{low: 1.0e-4, high: 1.0e-1, log: true, "
                                                   "when: {data.augment: hflip}}"},
                     data_augment="[hflip]")
    assert len(errors) == 1 and "never true" in errors[0] and "'hflip(p=0.5)'" in errors[0], errors
