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
from toy_tasks import TOY_TASKS, save_previous_run, tiny_modernbert_dir
from tunelab.config import NOT_RUN_CONFIGS, load_config
from tunelab.methods import METHODS
from tunelab.tasks import TASKS
from tunelab.training.plan import resolve

ROOT = Path(__file__).resolve().parents[1]
HELPERS = {"spec", "losses", "schemas"}


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


@pytest.mark.parametrize(
    "example",
    sorted(p for p in (ROOT / "examples").rglob("*.yaml") if not p.name.endswith(NOT_RUN_CONFIGS)),
    ids=lambda p: p.name,
)
def test_example_configs_validate(example: Path, tiny_backbone_dir: Path, tmp_path: Path):
    """Examples fine-tuning another example's output (model ``runs/...``) validate with MiniLM there,
    or with a tiny ModernBERT for the output of examples/pretrain_zh.yaml (a ModernBERT, whose settings
    such as ``classifier_pooling`` MiniLM's BertConfig lacks).

    Continual examples (``model.previous_run``) validate continuing a toy run of the same task.
    Search spaces (``*_space.yaml``), app settings (``*_app.yaml``) and safety gates (``*_gate.yaml``)
    are not run configs; tests/test_tuning.py, each app's tests and tests/serving/test_safety.py
    validate them.
    """
    model = load_config(example).model
    overrides = []
    if model.previous_run is not None:
        overrides = ["--model.previous_run", str(save_previous_run(tiny_backbone_dir, tmp_path))]
    elif model.start.startswith("runs/zh-pretrain"):
        overrides = ["--model.name_or_path", str(tiny_modernbert_dir())]
    elif model.start.startswith("runs/"):
        overrides = ["--model.name_or_path", "minilm-l6"]
    plan = resolve(load_config(example, overrides))
    assert plan.task.name == plan.cfg.task.name


def test_importing_config_and_cli_does_not_import_torch():
    code = "import sys, tunelab.cli, tunelab.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_every_task_has_toy_data() -> None:
    """Task-wide tests (the method contract matrix) need tiny data for every registered task."""
    assert sorted(TOY_TASKS) == sorted(TASKS.names())


SRC = ROOT / "src" / "tunelab"


def _own_files(kind: str, names: list[str], spec_of) -> dict[str, set[Path]]:
    """name -> the files of the module (or package) that defines that task / method."""
    out = {}
    for name in names:
        functions = [f for f in vars(spec_of(name)).values() if callable(f) and hasattr(f, "__module__")]
        modules = {f.__module__ for f in functions if f.__module__.startswith(f"tunelab.{kind}.")}
        files = set()
        for module in modules - {f"tunelab.{kind}.spec"}:
            path = SRC.joinpath(*module.split(".")[1:])
            files |= set(path.rglob("*.py")) if path.is_dir() else {path.with_suffix(".py")}
            package = path.parent / "__init__.py"  # a package's modules share its name (qa/, moe/)
            if package.parent != SRC / kind:
                files |= set(package.parent.rglob("*.py"))
        out[name] = files
    return out


def test_only_models_calls_from_pretrained():
    """Every model, tokenizer and config load goes through tunelab.models (one place to secure)."""
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in SRC.rglob("*.py")
        if SRC / "models" not in path.parents
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "from_pretrained" in line
    ]
    assert not offenders, offenders


def test_no_task_or_method_name_is_compared_outside_its_own_module():
    """Capabilities live on the specs: no ``name == "moe"`` / ``task in ("qa", ...)`` elsewhere."""
    import ast

    owners = _own_files("tasks", TASKS.names(), TASKS.get) | _own_files(
        "methods", METHODS.names(), METHODS.get
    )
    registries = {SRC / "tasks" / "__init__.py", SRC / "methods" / "__init__.py"}
    offenders = []
    for path in SRC.rglob("*.py"):
        if path in registries:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Compare):
                continue
            operands = [node.left, *node.comparators]
            literals = [
                c.value
                for operand in operands
                for c in ([operand] if isinstance(operand, ast.Constant) else getattr(operand, "elts", []))
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            ]
            offenders += [
                f"{path.relative_to(ROOT)}:{node.lineno}: {name!r}"
                for name in literals
                if name in owners and path not in owners[name]
            ]
    assert not offenders, offenders


@pytest.mark.parametrize("name", TASKS.names())
def test_explaining_tasks_accept_explain_at_predict(name: str) -> None:
    """A task that explains (``explain_input``) takes ``explain`` in its /v1/predict body, and only such."""
    from tunelab.tasks.schemas import ExplainOptions

    task = TASKS.get(name)
    takes = task.serve_schema is not None and issubclass(task.serve_schema.request, ExplainOptions)
    assert takes == (task.explain_input is not None)
