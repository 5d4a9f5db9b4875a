"""An empty ``search:`` or ``enqueue:`` (every entry commented out, so YAML reads null, or
``--set search=null``) is the empty section, as if the key were absent: same spec, same hash."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from hpo.cli.main import cli
from hpo.spec import load_spec, spec_sha256, spec_to_json
from tests.specs import write_spec


@pytest.mark.parametrize("key", ["search", "enqueue"])
def test_a_null_section_in_the_file_is_empty(tmp_path, key):
    plain = write_spec(tmp_path, "s", search={})
    commented = tmp_path / "commented.yaml"
    text = plain.read_text().replace("search: {}\n", "")
    commented.write_text(text + f"{key}:\n  # train.lr: {{low: 1.0e-4, high: 1.0e-1, log: true}}\n")
    spec = load_spec(commented)
    assert (spec.search, spec.enqueue) == ({}, [])
    assert spec_sha256(spec_to_json(spec)) == spec_sha256(spec_to_json(load_spec(plain)))


@pytest.mark.parametrize("key", ["search", "enqueue"])
def test_a_null_override_is_empty(tmp_path, key):
    spec = load_spec(write_spec(tmp_path, "s"), overrides=[f"{key}=null"])
    assert spec.search == ({} if key == "search" else {"train.lr": spec.search["train.lr"]})
    assert spec.enqueue == []


def test_the_cli_validates_a_spec_with_an_empty_search(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["space", "preview", str(write_spec(tmp_path, "s")), "--set", "search=null"])
    assert result.exit_code == 0, result.output
    assert "internal error" not in result.output
