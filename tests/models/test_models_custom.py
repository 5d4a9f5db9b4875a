"""A user's own nn.Module, named by an explicit import path."""

import textwrap

import pytest
import torch
from pydantic import ValidationError

from hpo.errors import TrainingError, UsageError
from hpo.models import CustomConfig, create_model, parse_model_config
from hpo.models.custom import (
    ModuleNotAllowedError,
    ModulePolicy,
    check_custom_model,
    module_policy,
    using_module_policy,
)

NETS = textwrap.dedent('''
    import torch
    from torch import nn

    class SEFireNet(nn.Module):
        """Takes what the data decides (in_shape, num_classes) plus its own kwargs."""

        def __init__(self, in_shape, num_classes, width=8, act="relu"):
            super().__init__()
            self.width, self.act = width, act
            c, h, w = in_shape
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, width), nn.ReLU())
            self.head = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.head(self.body(x))

    class Fixed(nn.Module):
        """Knows nothing of the data: gets only its kwargs."""

        def __init__(self, classes=3):
            super().__init__()
            self.classes = classes
            self.fc = nn.LazyLinear(classes)

        def forward(self, x):
            return self.fc(x.flatten(1))

    class Flexible(nn.Module):
        def __init__(self, **options):
            super().__init__()
            self.options = options
            self.fc = nn.Linear(1, 1)

    class Picky(nn.Module):
        def __init__(self, depth):
            super().__init__()
            raise ValueError(f"depth {depth} is too deep")

    NOT_A_MODULE = 42

    class Plain:
        pass
''')


@pytest.fixture
def nets(tmp_path, monkeypatch):
    package = tmp_path / "my_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(NETS)
    (tmp_path / "broken_nets.py").write_text("import torch\nraise RuntimeError('half-written file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with using_module_policy(ModulePolicy(allowed=("my_pkg", "broken_nets", "no_such_pkg"))):
        yield
    import sys

    for name in ("my_pkg", "my_pkg.nets", "broken_nets"):
        sys.modules.pop(name, None)


def _build(module: str, kwargs=None, in_shape=(1, 8, 8), num_classes=5):
    cfg = parse_model_config({"name": "custom", "module": module, "kwargs": kwargs or {}})
    return create_model(cfg, in_shape, num_classes)


@pytest.mark.parametrize("in_shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_builds_with_kwargs_in_shape_and_num_classes(nets, in_shape):
    model = _build("my_pkg.nets:SEFireNet", {"width": 16, "act": "gelu"}, in_shape, 5)
    assert (model.width, model.act) == (16, "gelu")
    out = model(torch.randn(3, *in_shape))
    assert out.shape == (3, 5)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_data_arguments_only_when_the_signature_takes_them(nets):
    fixed = _build("my_pkg.nets:Fixed", {"classes": 4})
    assert fixed.classes == 4
    # An initialiser leaves lazy layers alone: they get their shape on the first batch.
    lazy = create_model(CustomConfig(module="my_pkg.nets:Fixed", init="normal"), (1, 8, 8), 5)
    assert lazy(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    flexible = _build("my_pkg.nets:Flexible", {"a": 1}, (3, 32, 32), 7)
    assert flexible.options == {"a": 1, "in_shape": (3, 32, 32), "num_classes": 7}


def test_init_applies_to_custom_models(nets):
    cfg = CustomConfig(module="my_pkg.nets:SEFireNet", init="normal", init_std=0.3)
    model = create_model(cfg, (1, 28, 28), 5)
    assert abs(model.body[1].weight.std().item() - 0.3) < 0.03


@pytest.mark.parametrize(
    "module",
    ["my_pkg.nets", "my_pkg.nets:", ":Net", "my_pkg/nets:Net", "my_pkg.nets:Net()",
     "my_pkg..nets:Net", "os.system('x'):Net", "1pkg:Net", "my_pkg.nets:Net.inner"],
)
def test_import_path_syntax_is_checked_at_spec_time(module):
    with pytest.raises(ValidationError) as exc:
        CustomConfig(module=module)
    [error] = exc.value.errors()
    assert error["loc"] == ("module",)
    assert error["msg"] == (f"Value error, {module!r} is not an import path of the form "
                            "package.module:Class (e.g. my_pkg.nets:SEFireNet)")


def test_module_is_required_and_kwargs_may_not_carry_data_keys():
    with pytest.raises(ValidationError) as exc:
        CustomConfig()
    assert exc.value.errors()[0]["type"] == "missing"
    with pytest.raises(ValidationError, match="in_shape and num_classes come from the data; "
                                              "remove them from kwargs"):
        CustomConfig(module="a:B", kwargs={"in_shape": [1, 2, 2], "num_classes": 3})


@pytest.mark.parametrize(
    "module,message",
    [
        ("no_such_pkg.nets:Net",
         "model.module 'no_such_pkg.nets:Net': cannot import 'no_such_pkg.nets' (No module named "
         "'no_such_pkg'); on every worker, install it, or name the folder that holds it with "
         "--module-path DIR or HPO_MODULE_PATH"),
        ("broken_nets:Net",
         "model.module 'broken_nets:Net': importing 'broken_nets' failed: RuntimeError: "
         "half-written file"),
        ("my_pkg.nets:SEFireNett",
         "model.module 'my_pkg.nets:SEFireNett': 'my_pkg.nets' has no attribute 'SEFireNett' "
         "(its nn.Module classes: Fixed, Flexible, Picky, SEFireNet)"),
        ("my_pkg.nets:NOT_A_MODULE",
         "model.module 'my_pkg.nets:NOT_A_MODULE': NOT_A_MODULE is not an nn.Module subclass (got 42)"),
        ("my_pkg.nets:Plain",
         "model.module 'my_pkg.nets:Plain': Plain is not an nn.Module subclass "
         "(got <class 'my_pkg.nets.Plain'>)"),
        ("my_pkg.nets:Picky",
         "model.module 'my_pkg.nets:Picky': Picky(**{}) raised TypeError: "
         "Picky.__init__() missing 1 required positional argument: 'depth'"),
    ],
)
def test_bad_imports_are_clear_errors(nets, module, message):
    with pytest.raises(TrainingError) as exc:
        _build(module)
    assert str(exc.value) == message


def test_the_working_directory_is_never_searched(tmp_path, monkeypatch):
    """Not even for an allowed module: a folder is searched only when --module-path names it."""
    import os
    import sys

    project = tmp_path / "project"
    project.mkdir()
    (project / "cwd_nets.py").write_text(NETS)
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    monkeypatch.delitem(sys.modules, "cwd_nets", raising=False)
    with using_module_policy(ModulePolicy(allowed=("cwd_nets",))), pytest.raises(TrainingError) as exc:
        _build("cwd_nets:Fixed", {"classes": 2})
    assert "cannot import 'cwd_nets'" in str(exc.value) and "--module-path DIR" in str(exc.value)
    assert str(project) not in sys.path


def test_a_module_path_is_searched_after_the_installed_packages_while_in_force(tmp_path, monkeypatch):
    import sys

    (tmp_path / "path_nets.py").write_text(NETS)
    monkeypatch.delitem(sys.modules, "path_nets", raising=False)
    policy = ModulePolicy.of(["path_nets"], [str(tmp_path)])
    with using_module_policy(policy):
        assert sys.path[-1] == str(tmp_path)  # last: an installed package of the name wins
        assert _build("path_nets:Fixed", {"classes": 2}).classes == 2
    assert str(tmp_path) not in sys.path and module_policy() == ModulePolicy()
    sys.modules.pop("path_nets", None)


def test_nothing_is_allowed_by_default_and_a_refusal_imports_nothing(nets):
    import sys

    with using_module_policy(ModulePolicy()), pytest.raises(ModuleNotAllowedError) as exc:
        _build("my_pkg.nets:SEFireNet")
    assert str(exc.value) == (
        "model.module 'my_pkg.nets:SEFireNet': module 'my_pkg.nets' is not allowed on this worker "
        "(allowed: none); if it is your code, allow it with --allow-module my_pkg.nets or "
        "HPO_ALLOW_MODULES=my_pkg.nets")
    assert exc.value.exit_code == 2 and "my_pkg.nets" not in sys.modules


@pytest.mark.parametrize("module,allowed", [
    ("models", True), ("models.example_net", True), ("models.a.b", True),
    ("modelsx", False), ("modelsx.nets", False), ("my", False), ("os", False),
])
def test_prefixes_match_at_dot_boundaries(module, allowed):
    assert ModulePolicy.of(["models,my_pkg.nets"], []).allows(module) is allowed


def test_the_policy_travels_through_the_environment(tmp_path):
    policy = ModulePolicy.of(["models", " my_pkg.nets , models"], [str(tmp_path), ""])
    assert policy == ModulePolicy(("models", "my_pkg.nets"), (str(tmp_path),))
    assert ModulePolicy.from_env(policy.as_env()) == policy
    assert ModulePolicy.from_env({}) == ModulePolicy()


@pytest.mark.parametrize("allowed,paths,message", [
    (["models/nets"], [], "--allow-module 'models/nets': expected a module name"),
    (["models."], [], "--allow-module 'models.': expected a module name"),
    ([], ["/no/such/folder"], "--module-path /no/such/folder: no such directory"),
])
def test_a_malformed_policy_is_a_usage_error(allowed, paths, message):
    with pytest.raises(UsageError, match="^" + message):
        ModulePolicy.of(allowed, paths)


def test_the_check_before_any_trial_names_kwargs_the_class_does_not_take(nets):
    check_custom_model(CustomConfig(module="my_pkg.nets:SEFireNet", kwargs={"width": 4}))
    check_custom_model(CustomConfig(module="my_pkg.nets:Flexible", kwargs={"anything": 1}))
    with pytest.raises(UsageError) as exc:
        check_custom_model(CustomConfig(module="my_pkg.nets:SEFireNet", kwargs={"depth": 3}))
    assert str(exc.value).startswith("model.module 'my_pkg.nets:SEFireNet': model.kwargs {'depth': 3} "
                                     "do not fit SEFireNet(in_shape, num_classes, width=8, act='relu'): ")
    assert "unexpected keyword argument 'depth'" in str(exc.value)
    with pytest.raises(UsageError, match="missing a required argument: 'depth'"):
        check_custom_model(CustomConfig(module="my_pkg.nets:Picky"))
    with pytest.raises(UsageError, match="NOT_A_MODULE is not an nn.Module subclass"):
        check_custom_model(CustomConfig(module="my_pkg.nets:NOT_A_MODULE"))


def test_constructor_errors_name_the_kwargs(nets):
    with pytest.raises(TrainingError) as exc:
        _build("my_pkg.nets:Picky", {"depth": 99})
    assert str(exc.value) == ("model.module 'my_pkg.nets:Picky': Picky(**{'depth': 99}) raised "
                              "ValueError: depth 99 is too deep")
