"""Spec validation and ``hpo --help`` import these modules; they must not pay for torch."""

import subprocess
import sys


def test_config_modules_do_not_import_torch():
    code = (
        "import hpo.models, hpo.models.registry, hpo.models.mlp, hpo.models.cnn\n"
        "import hpo.models.init, hpo.models.layers\n"
        "import hpo.training, hpo.training.config, hpo.training.optim, hpo.training.schedules\n"
        "import hpo.training.datasets, hpo.training.raw, hpo.training.augment\n"
        "import hpo.training.metrics\n"
        "import sys\n"
        "heavy = sorted(m for m in ('torch', 'sklearn', 'numpy', 'optuna') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_training_never_imports_optuna():
    code = (
        "import hpo.training.loop, hpo.training.data, sys\n"
        "assert 'optuna' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
