"""Spec validation imports every model family; none of them may pay for torch."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import hpo.models as models

CONFIG_MODULES = sorted(
    f"hpo.models.{m.name}" for m in pkgutil.iter_modules([str(Path(models.__file__).parent)])
    if not m.name.startswith("_")
)


@pytest.mark.subprocess
def test_config_modules_do_not_import_torch():
    expected = {"hpo.models.backbone", "hpo.models.custom", "hpo.models.patch_mlp", "hpo.models.squeezenet"}
    assert expected <= set(CONFIG_MODULES)
    code = (
        f"import {', '.join(CONFIG_MODULES)}\n"
        "import hpo.models as models, sys\n"
        "models.parse_model_config({'name': 'torchvision', 'arch': 'resnet18', 'pretrained': 'hub'})\n"
        "models.parse_model_config({'name': 'custom', 'module': 'no_such_pkg.nets:Net'})\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'numpy', 'no_such_pkg') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
