"""``--key.path value`` overrides of a raw config tree: parsed as YAML values, set at dotted/indexed paths.

Kept apart from ``config`` because they act on the raw dict before validation: ``config`` applies the
command line's, a search (``tuning``) and ``reproduce`` set their own keys the same way.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from tunelab.errors import ConfigError
from tunelab.io import parse_yaml

_OVERRIDE = re.compile(r"^--([A-Za-z_][\w.\[\]]*)(?:=(.*))?$", re.S)
_PATH_PART = re.compile(r"([A-Za-z_]\w*)|\[(\d+)\]")


def parse_overrides(args: list[str]) -> list[tuple[str, Any]]:
    """Turn ``["--train.lr", "3e-5", "--methods[0].params.r=8"]`` into ``(key, value)`` pairs.

    Values are parsed as YAML scalars/collections so ``true``, ``8`` and ``[a, b]`` get their types.
    """
    pairs: list[tuple[str, Any]] = []
    i = 0
    while i < len(args):
        match = _OVERRIDE.match(args[i])
        if not match:
            raise ConfigError(f"override {args[i]!r}: expected --key.path VALUE or --key.path=VALUE")
        key, raw = match.group(1), match.group(2)
        if raw is None:
            if i + 1 >= len(args):
                raise ConfigError(f"override --{key}: missing value")
            raw = args[i + 1]
            i += 1
        try:
            pairs.append((key, parse_yaml(raw) if raw != "" else ""))
        except yaml.YAMLError as exc:
            why = getattr(exc, "problem", None) or exc  # a parser error's one-line reason, without its marks
            raise ConfigError(f"override --{key}: {raw!r} is not a YAML value ({why})") from None
        i += 1
    return pairs


def _split_key(key: str) -> list[str | int]:
    parts: list[str | int] = []
    for name, index in _PATH_PART.findall(key):
        parts.append(name if name else int(index))
    if not parts or "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".") != key:
        raise ConfigError(f"override --{key}: not a key path like train.lr or methods[0].params.r")
    return parts


def apply_override(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` (dotted, with ``[i]`` list indices) in a raw config dict, creating dicts on the way."""
    parts = _split_key(key)
    node: Any = tree
    for part, nxt in zip(parts, parts[1:], strict=False):
        if isinstance(part, int):
            if not isinstance(node, list) or part > len(node):
                raise ConfigError(f"override --{key}: list index {part} does not exist")
            if part == len(node):  # methods[0].name on a config without methods appends an entry
                node.append({})
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"override --{key}: {part!r} is not inside a mapping")
            node = node.setdefault(part, [] if isinstance(nxt, int) else {})
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise ConfigError(f"override --{key}: list index {last} does not exist")
    elif not isinstance(node, dict):
        raise ConfigError(f"override --{key}: {last!r} is not inside a mapping")
    node[last] = value
