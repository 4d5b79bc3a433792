"""Instruction / chat data -> one ``messages`` list per example (role + content), checked with file:line.

Accepted JSONL/JSON/Parquet row shapes, detected per row so one file may mix them:

- Alpaca: ``instruction`` (+ optional ``input``, + optional ``system``) and ``output``;
- ShareGPT: ``conversations`` = ``[{"from": "human"|"gpt"|"system", "value": ...}, ...]``;
- OpenAI messages: ``messages`` = ``[{"role": "user"|"assistant"|"system", "content": ...}, ...]``;
- plain ``prompt`` / ``completion``.

Everything becomes OpenAI-style messages, the form the model's chat template takes, so training,
evaluation, prediction and serving render conversations through the one template.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets

from tunelab.config import DataConfig
from tunelab.data import TaskData
from tunelab.data.readers import Problems, read_table
from tunelab.data.splits import stratified_split, subsample

Message = dict[str, str]
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
}
FORMATS = "instruction/output (Alpaca), conversations (ShareGPT), messages (OpenAI) or prompt/completion"


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _from_alpaca(row: dict[str, Any]) -> list[Message]:
    prompt = row["instruction"] if not _text(row.get("input")) else f"{row['instruction']}\n\n{row['input']}"
    system = [{"role": "system", "content": row["system"]}] if _text(row.get("system")) else []
    return [*system, {"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]


def _from_turns(turns: Any, role_key: str, text_key: str, roles: dict[str, str]) -> list[Message] | str:
    """Turns as messages, or what is wrong with them."""
    if not isinstance(turns, list) or not turns:
        return "expected a non-empty list of turns"
    out = []
    for i, turn in enumerate(turns):
        if (
            not isinstance(turn, dict)
            or turn.get(role_key) not in roles
            or not isinstance(turn.get(text_key), str)
        ):
            return f"turn {i}: needs {role_key!r} in {sorted(roles)} and a string {text_key!r}"
        out.append({"role": roles[turn[role_key]], "content": turn[text_key]})
    return out


def to_messages(row: dict[str, Any]) -> list[Message] | str:
    """One raw row as messages, or the reason it is not a valid example (for the file:line report)."""
    if row.get("messages") is not None:
        messages = _from_turns(row["messages"], "role", "content", {r: r for r in ROLES})
    elif row.get("conversations") is not None:
        messages = _from_turns(row["conversations"], "from", "value", SHAREGPT_ROLES)
    elif _text(row.get("instruction")) and isinstance(row.get("output"), str):
        messages = _from_alpaca(row)
    elif _text(row.get("prompt")) and isinstance(row.get("completion"), str):
        messages = [
            {"role": "user", "content": row["prompt"]},
            {"role": "assistant", "content": row["completion"]},
        ]
    else:
        return f"no conversation found; give {FORMATS}"
    if isinstance(messages, str):
        return messages
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        return "no non-empty assistant response to learn from"
    return messages


def read_conversations(path: Path, problems: Problems) -> list[list[Message]]:
    """Every row of ``path`` as messages; bad rows go to ``problems`` as file:line."""
    table = read_table(path, problems)
    rows = [
        dict(zip(table.columns, values, strict=True)) for values in zip(*table.columns.values(), strict=True)
    ]
    out = []
    for i, row in enumerate(rows):
        messages = to_messages(row)
        if isinstance(messages, str):
            problems.add(table.where(i), messages)
        else:
            out.append(messages)
    return out


def load_conversation_file(path: Path) -> datasets.Dataset:
    """One checked file of conversations (``tunelab eval``)."""
    problems = Problems()
    rows = read_conversations(path, problems)
    problems.raise_if_any()
    return datasets.Dataset.from_dict({"messages": rows})


def load_conversation_data(cfg: DataConfig, seed: int) -> TaskData:
    """Train/dev(/test) conversations; dev is a seeded split of train when no ``dev_file`` is given."""
    problems = Problems()
    train = read_conversations(cfg.train_file, problems)
    dev = read_conversations(cfg.dev_file, problems) if cfg.dev_file else None
    test = read_conversations(cfg.test_file, problems) if cfg.test_file else None
    problems.raise_if_any()
    if dev is None:
        train_idx, dev_idx = stratified_split(["chat"] * len(train), cfg.dev_ratio, seed)
        train, dev = [train[i] for i in train_idx], [train[i] for i in dev_idx]

    def dataset(rows: list[list[Message]], limit: int | None) -> datasets.Dataset:
        return datasets.Dataset.from_dict({"messages": [rows[i] for i in subsample(len(rows), limit, seed)]})

    return TaskData(
        train=dataset(train, cfg.max_train_samples),
        dev=dataset(dev, cfg.max_eval_samples),
        test=dataset(test, cfg.max_eval_samples) if test is not None else None,
        labels=[],
    )
