"""Config loading, overrides and validation messages; plan.resolve errors keyed by full path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tunelab.config import RunConfig, load_config, validate_config
from tunelab.errors import ConfigError
from tunelab.overrides import apply_override, parse_overrides
from tunelab.registry import Registry


def _raw(**sections: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {"model": {"name_or_path": "some-model"}, "data": {"train_file": "train.csv"}}
    raw.update(sections)
    return raw


def _write_yaml(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("raw", "key", "allowed"),
    [
        (_raw(train={"lrr": 1e-4}), "train.lrr", ["lr", "warmup_steps", "metric_for_best_model"]),
        (_raw(modle={"name_or_path": "x"}), "modle", ["model", "data", "task", "methods", "train"]),
        (_raw(methods=[{"name": "full", "parms": {}}]), r"methods\[0\]\.parms", ["name", "params"]),
        (_raw(data={"train_file": "t.csv", "txt_column": "t"}), "data.txt_column", ["text_column"]),
    ],
)
def test_validate_config_unknown_key_names_path_and_allowed_keys(
    raw: dict[str, Any], key: str, allowed: list[str]
) -> None:
    with pytest.raises(ConfigError, match=rf"(?m)^{key}: unknown key; allowed keys: ") as excinfo:
        validate_config(raw)
    line = next(ln for ln in str(excinfo.value).splitlines() if re.match(key, ln))
    listed = line.split("allowed keys: ", 1)[1].split(", ")
    assert set(allowed) <= set(listed)


def test_validate_config_literal_error_shows_allowed_values() -> None:
    with pytest.raises(
        ConfigError, match=r"train\.lr_scheduler_type: .*'linear', 'cosine' or 'constant'.*'poly'"
    ):
        validate_config(_raw(train={"lr_scheduler_type": "poly"}))


def test_validate_config_reports_all_errors_at_once() -> None:
    raw = _raw(train={"lr": -1, "precision": "fp8", "bogus": 1}, task={"name": "classification", "x": 1})
    del raw["data"]

    with pytest.raises(ConfigError) as excinfo:
        validate_config(raw)

    lines = str(excinfo.value).splitlines()
    assert lines[0] == "invalid config:"
    for expected in (
        r"data: required key is missing",
        r"train\.lr: Input should be greater than 0",
        r"train\.precision: Input should be 'auto', 'fp32', 'bf16' or 'fp16'",
        r"train\.bogus: unknown key",
        r"task\.x: unknown key",
    ):
        assert any(re.match(expected, ln) for ln in lines), (expected, lines)


def test_validate_config_warmup_steps_and_ratio_are_exclusive() -> None:
    with pytest.raises(ConfigError, match=r"(?m)^train: .*warmup_steps and warmup_ratio are exclusive"):
        validate_config(_raw(train={"warmup_steps": 10, "warmup_ratio": 0.1}))


@pytest.mark.parametrize("train", [{"warmup_steps": 10}, {"warmup_ratio": 0.1}, {}])
def test_validate_config_single_warmup_setting_is_accepted(train: dict[str, Any]) -> None:
    cfg = validate_config(_raw(train=train))

    assert cfg.train.warmup_steps == train.get("warmup_steps")
    assert cfg.train.warmup_ratio == train.get("warmup_ratio")


@pytest.mark.parametrize(
    "args",
    [["--train.lr", "3e-5"], ["--train.lr=3e-5"]],
    ids=["space", "equals"],
)
def test_load_config_override_sets_learning_rate(tmp_path: Path, args: list[str]) -> None:
    path = _write_yaml(tmp_path / "run.yaml", _raw(train={"lr": 1e-3}))

    cfg = load_config(path, args)

    assert cfg.train.lr == pytest.approx(3e-5)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--train.seed", "7"], [("train.seed", 7)]),
        (["--train.group_by_length=false"], [("train.group_by_length", False)]),
        (["--task.params.labels", "[neg, pos]"], [("task.params.labels", ["neg", "pos"])]),
        (["--train.seed", "-1", "--data.dev_file="], [("train.seed", -1), ("data.dev_file", "")]),
        (["--methods[0].params.r", "8"], [("methods[0].params.r", 8)]),
    ],
)
def test_parse_overrides_types_values_with_yaml(args: list[str], expected: list[tuple[str, Any]]) -> None:
    assert parse_overrides(args) == expected


def test_parse_overrides_scientific_notation_is_a_number_after_validation() -> None:
    [(key, value)] = parse_overrides(["--train.lr", "3e-5"])

    assert key == "train.lr"
    assert float(value) == pytest.approx(3e-5)


def test_apply_override_list_index_creates_entry() -> None:
    tree: dict[str, Any] = {"train": {"lr": 1e-3}}

    for key, value in parse_overrides(["--methods[0].params.r", "8", "--methods[0].name=full"]):
        apply_override(tree, key, value)

    assert tree == {"train": {"lr": 1e-3}, "methods": [{"params": {"r": 8}, "name": "full"}]}


def test_apply_override_appends_after_existing_list_entries() -> None:
    tree: dict[str, Any] = {"methods": [{"name": "full"}]}

    apply_override(tree, "methods[1].name", "lora")

    assert tree["methods"] == [{"name": "full"}, {"name": "lora"}]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train.lr", "3e-5"], r"'train\.lr': expected --key\.path VALUE or --key\.path=VALUE"),
        (["-train.lr=1"], r"expected --key\.path VALUE"),
        (["--train.lr"], r"--train\.lr: missing value"),
        (["--train..lr=1"], r"--train\.\.lr: not a key path"),
        (["--methods[x].name=full"], r"not a key path"),
        (["--methods[0]name=full"], r"not a key path"),
        (["--methods[3].name=full"], r"list index 3 does not exist"),
        (["--train.lr.value=1"], r"'value' is not inside a mapping"),
    ],
)
def test_load_config_bad_override_raises_config_error(tmp_path: Path, args: list[str], message: str) -> None:
    path = _write_yaml(tmp_path / "run.yaml", _raw(train={"lr": 1e-3}))

    with pytest.raises(ConfigError, match=message):
        load_config(path, args)


def test_load_config_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"

    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: config file not found"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: {name_or_path: x\ndata: [", "not valid YAML"),
        ("- just\n- a list\n", "the top level must be a mapping"),
    ],
)
def test_load_config_bad_yaml_names_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: {message}"):
        load_config(path)


DUPLICATES = [
    (
        "model: {name_or_path: m}\ntrain:\n  lr: 1.0e-3\ndata: {train_file: t.csv}\ntrain:\n  seed: 1\n",
        "key 'train' at line 5 duplicates line 2",
    ),
    (
        "model: {name_or_path: m}\ndata: {train_file: t.csv}\ntrain:\n  lr: 1.0\n  lr: 2.0\n",
        "key 'lr' at line 5 duplicates line 4",
    ),
    (
        "model: {name_or_path: m}\ndata: {train_file: t.csv}\nmethods:\n- {name: lora, name: full}\n",
        "key 'name' at line 4 duplicates line 4",
    ),
]


@pytest.mark.parametrize(("text", "message"), DUPLICATES, ids=["top-level", "nested", "flow-in-list"])
def test_load_config_refuses_duplicate_keys_with_both_lines(tmp_path: Path, text: str, message: str) -> None:
    """PyYAML keeps the last of two equal keys; the first block's settings would vanish silently."""
    path = tmp_path / "cfg.yaml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(ConfigError, match=rf"^{re.escape(f'{path}: {message}; keep one')}$"):
        load_config(path)


def test_load_config_merge_key_may_be_overridden(tmp_path: Path) -> None:
    """``<<: *base`` then a key of base is YAML's way to override, not a duplicate."""
    path = tmp_path / "cfg.yaml"
    text = "base: &b {lr: 1.0, seed: 3}\nmodel: {name_or_path: m}\ndata: {train_file: t.csv}\n"
    path.write_text(text + "train:\n  <<: *b\n  lr: 2.0\n", encoding="utf-8")

    with pytest.raises(ConfigError, match=r"(?m)^base: unknown key") as excinfo:
        load_config(path)

    assert "duplicates" not in str(excinfo.value)


def test_override_value_that_is_not_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = _write_yaml(tmp_path / "run.yaml", _raw())

    with pytest.raises(ConfigError, match=r"^override --train\.lr: '\[1,' is not a YAML value \(expected"):
        load_config(path, ["--train.lr", "[1,"])


def test_load_config_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_bytes(b"model: {name_or_path: m}\n# caf\xe9\n")

    with pytest.raises(ConfigError, match=re.escape(f"{path}:2: not UTF-8 (byte 0xe9 at column 6)")):
        load_config(path)


def test_registry_get_miss_lists_choices() -> None:
    registry = Registry("widget", {"beta": 2, "alpha": 1})

    with pytest.raises(KeyError, match=r"unknown widget 'gamma'; choose one of: alpha, beta"):
        registry.get("gamma")
    assert registry.get("alpha") == 1


@pytest.fixture
def resolvable(tmp_path: Path) -> dict[str, Any]:
    """A raw config whose model is an existing local directory (all resolve needs)."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    return _raw(model={"name_or_path": str(model_dir)}, task={"name": "classification", "params": {}})


def _with(raw: dict[str, Any], section: str, value: Any) -> RunConfig:
    return validate_config({**raw, section: value})


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ("task", {"params": {"max_length": 0}}, r"(?m)^task\.params\.max_length: Input should be greater"),
        ("task", {"params": {"max_len": 8}}, r"(?m)^task\.params\.max_len: unknown key; allowed keys: "),
        ("task", {"name": "translation"}, r"(?m)^task\.name: unknown task 'translation'; choose one of: "),
        (
            "methods",
            [{"name": "lroa"}],
            r"(?m)^methods\[0\]\.name: unknown method 'lroa'; choose one of: .*\bfull\b",
        ),
        ("methods", [{"name": "full", "params": {"r": 8}}], r"(?m)^methods\[0\]\.params\.r: unknown key"),
        ("methods", [], r"(?m)^methods: list at least one method"),
        (
            "train",
            {"metric_for_best_model": "f1"},
            r"(?m)^train\.metric_for_best_model: 'f1' is not a metric .*"
            r"choose one of: loss, accuracy, macro_f1",
        ),
        ("model", {"name_or_path": "/does/not/exist"}, r"(?m)^model\.name_or_path: model '/does/not/exist'"),
    ],
)
def test_resolve_errors_are_keyed_by_full_path(
    resolvable: dict[str, Any], section: str, value: Any, message: str
) -> None:
    from tunelab.training.plan import resolve

    cfg = _with(resolvable, section, value)

    with pytest.raises(ConfigError, match=message):
        resolve(cfg)


def test_resolve_reports_every_problem_at_once(resolvable: dict[str, Any]) -> None:
    from tunelab.training.plan import resolve

    raw = {
        **resolvable,
        "task": {"params": {"max_length": 0}},
        "methods": [{"name": "full"}, {"name": "nope"}],
        "train": {"metric_for_best_model": "bleu"},
    }

    with pytest.raises(ConfigError) as excinfo:
        resolve(validate_config(raw))

    keys = [ln.split(":", 1)[0] for ln in str(excinfo.value).splitlines()[1:]]
    assert keys == ["task.params.max_length", "methods[1].name", "train.metric_for_best_model"]


def test_resolve_valid_config_returns_plan(resolvable: dict[str, Any]) -> None:
    from tunelab.training.plan import resolve

    plan = resolve(_with(resolvable, "task", {"params": {"max_length": 16}}))

    assert plan.task.name == "classification"
    assert plan.task_params.max_length == 16
    assert [spec.name for spec, _ in plan.methods] == ["full"]
    assert plan.model_dir == Path(resolvable["model"]["name_or_path"])
    assert plan.higher_is_better
