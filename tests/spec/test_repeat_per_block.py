"""`repeat` on per-block model settings: one sampled value per block, held to the model's rules."""

from __future__ import annotations

import pytest
import torch

from hpo.errors import SpecError
from hpo.spec import load_spec
from hpo.spec.space import preview

CNN_SPEC = """\
name: t
model: {name: cnn, padding: same}
search:
  model.n_blocks: {low: 1, high: 4}
  model.kernel_size: {choices: [3, 5], repeat: model.n_blocks}
  model.stride: {choices: [1, 2], repeat: model.n_blocks}
  model.pool: {choices: [max, none], repeat: model.n_blocks}
"""

PATCH_SPEC = """\
name: t
model: {name: patch_mlp, norm: batch, residual: false}
search:
  model.depth: {low: 1, high: 5}
  model.hidden: {choices: [16, 32, 64], repeat: model.depth}
"""


def _load(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return load_spec(path)


def test_cnn_kernel_stride_and_pool_are_sampled_per_block(tmp_path):
    from hpo.models import create_model, parse_model_config

    counts = set()
    for params, config in preview(_load(tmp_path, CNN_SPEC), 25, seed=3):
        model = config["model"]
        n = model["n_blocks"]
        counts.add(n)
        for key in ("kernel_size", "stride", "pool"):
            assert model[key] == [params[f"model.{key}[{i}]"] for i in range(n)]
            assert f"model.{key}[{n}]" not in params
        net = create_model(parse_model_config(model), (1, 28, 28), 10)
        convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        assert [c.kernel_size[0] for c in convs] == model["kernel_size"]
        assert [c.stride[0] for c in convs] == model["stride"]
    assert len(counts) > 1  # the lists follow a varying count


def test_patch_mlp_widths_are_sampled_per_block(tmp_path):
    for params, config in preview(_load(tmp_path, PATCH_SPEC), 10, seed=0):
        model = config["model"]
        assert model["hidden"] == [params[f"model.hidden[{i}]"] for i in range(model["depth"])]
        assert (model["norm"], model["residual"]) == ("batch", False)


@pytest.mark.parametrize("key,choices", [("kernel_size", "[3, 12]"), ("padding", "[same, full]")])
def test_repeated_choices_are_checked_like_fixed_values(tmp_path, key, choices):
    text = f"name: t\nmodel: {{name: cnn}}\nsearch:\n  model.{key}: {{choices: {choices}, repeat: model.n_blocks}}\n"
    with pytest.raises(SpecError) as caught:
        _load(tmp_path, text)
    [problem] = caught.value.problems
    assert f":4: search.model.{key}.choices[1]" in problem, problem
