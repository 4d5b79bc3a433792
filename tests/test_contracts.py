"""Project-wide contracts: registries list every module, layers hold, examples validate, --help is light."""

from __future__ import annotations

import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tunelab.methods
import tunelab.tasks
from toy_tasks import TOY_TASKS
from tunelab.config import load_config
from tunelab.methods import METHODS
from tunelab.tasks import TASKS
from tunelab.training.plan import resolve

ROOT = Path(__file__).resolve().parents[1]
HELPERS = {"spec", "losses"}


def test_task_registry_lists_every_module():
    """One module per task, named like it: a new task file without its registry line fails here."""
    modules = {m.name for m in pkgutil.iter_modules(tunelab.tasks.__path__)} - HELPERS
    assert modules == set(TASKS.names())


def test_method_registry_lists_every_module():
    """Every method module registers its specs (peft's several); a file without its registry line fails."""
    modules = {m.name for m in pkgutil.iter_modules(tunelab.methods.__path__)} - HELPERS
    specs = [METHODS.get(name) for name in METHODS.names()]
    # A step-only method's apply is the shared spec.step_only_apply; its step names its module.
    registered = {
        next(f.__module__ for f in (s.apply, s.step) if not f.__module__.endswith(".spec")).split(".")[2]
        for s in specs
    }
    assert modules == registered


def test_import_layers_hold():
    """import-linter's layers contract from pyproject.toml (lower layers never import higher ones)."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is not installed (dev extra)"
    result = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_validate(example: Path):
    """Examples fine-tuning another example's output (model ``runs/...``) validate with MiniLM there."""
    upstream = load_config(example).model.name_or_path.startswith("runs/")
    plan = resolve(load_config(example, ["--model.name_or_path", "minilm-l6"] if upstream else []))
    assert plan.task.name == plan.cfg.task.name


def test_importing_config_and_cli_does_not_import_torch():
    code = "import sys, tunelab.cli, tunelab.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_every_task_has_toy_data() -> None:
    """Task-wide tests (the method contract matrix) need tiny data for every registered task."""
    assert sorted(TOY_TASKS) == sorted(TASKS.names())
