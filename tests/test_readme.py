"""README.md stays true: generated config reference, every command and flag, links inside the repository."""

from __future__ import annotations

import difflib
import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml

from tunelab.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# Files the README links to that are written alongside it; a link to one must still stay in the repo.
PENDING = {"CONTRIBUTING.md"}
LOCAL_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0", "::1", "[::1]"}


def _load_script(name: str) -> ModuleType:
    """Import scripts/<name>.py (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", ROOT / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _prose(text: str) -> str:
    """README without fenced code blocks (links and headings inside them do not count)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _section(text: str, heading: str) -> str:
    """The body of the heading ``heading`` (e.g. ``### Commands``) up to the next heading of its level."""
    level = heading.split(" ", 1)[0]
    match = re.search(rf"^{re.escape(heading)}\n(.*?)(?=^{level} |\Z)", text, flags=re.S | re.M)
    assert match, f"README.md has no '{heading}' section"
    return match.group(1)


def _commands() -> dict[str, Any]:
    """Every leaf command of the CLI by its full name, e.g. ``data back-translate``.

    Duck-typed (groups have ``commands``, options ``param_type_name == "option"``): typer may bring
    its own copy of click, whose classes are not ``click``'s.
    """
    found: dict[str, Any] = {}

    def walk(command: Any, prefix: str) -> None:
        if getattr(command, "commands", None):
            for name, sub in command.commands.items():
                walk(sub, f"{prefix} {name}".strip())
        else:
            found[prefix] = command

    walk(typer.main.get_command(app), "")
    return found


def test_config_reference_matches_the_code():
    """The block between the config-reference markers is exactly what the generator renders now."""
    script = _load_script("config_reference")
    current = script.readme_block(_readme())
    generated = script.render()
    diff = "".join(
        difflib.unified_diff(
            current.splitlines(keepends=True), generated.splitlines(keepends=True), "README.md", "generated"
        )
    )
    assert current == generated, (
        f"{diff}\nREADME.md's config reference is stale: run python scripts/config_reference.py --write"
    )


def test_config_reference_is_deterministic():
    script = _load_script("config_reference")
    assert script.render() == script.render()


def test_every_command_is_in_the_command_reference():
    section = _section(_readme(), "### Commands")
    commands = _commands()
    assert {"train", "data prepare", "data back-translate"} <= set(commands), sorted(commands)
    missing = [name for name in commands if f"`tunelab {name}" not in section]
    assert not missing, f"commands missing from README.md's '### Commands': {missing}"


def test_every_option_is_in_the_command_reference():
    section = _section(_readme(), "### Commands")
    missing = []
    for name, command in _commands().items():
        for param in command.params:
            if param.param_type_name != "option" or "--help" in param.opts:
                continue
            flag = max(param.opts, key=len)
            if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", section):
                missing.append(f"tunelab {name} {flag}")
    assert not missing, f"options missing from README.md's '### Commands': {missing}"


def _links(text: str) -> list[str]:
    prose = _prose(text)
    inline = re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose)
    autolinks = re.findall(r"<((?:https?|file|ftp)://[^>\s]+)>", prose)
    references = re.findall(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", prose, flags=re.M)
    return inline + autolinks + references


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(text: str) -> set[str]:
    anchors: set[str] = set()
    counts: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+)$", _prose(text), flags=re.M):
        slug = _slug(heading)
        n = counts.get(slug, 0)
        counts[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def test_readme_has_links():
    """Guard for the link tests below: the parser finds the README's links at all."""
    assert len(_links(_readme())) > 10


def test_links_stay_inside_the_repository():
    """Relative links resolve inside the repo; web links go to public sites, never to local files."""
    bad = []
    for target in _links(_readme()):
        parts = urlsplit(target)
        if parts.scheme in ("http", "https"):
            if (parts.hostname or "") in LOCAL_HOSTS or not parts.hostname:
                bad.append(f"{target}: a local address, not public documentation")
            continue
        if parts.scheme or target.startswith("//"):
            bad.append(f"{target}: only relative links and http(s) links to public docs are allowed")
            continue
        if not parts.path:  # an anchor in the README itself; checked below
            continue
        if parts.path.startswith(("/", "~")):
            bad.append(f"{target}: an absolute path; link relative to the repository instead")
            continue
        path = (ROOT / parts.path).resolve()
        if not path.is_relative_to(ROOT):
            bad.append(f"{target}: outside the repository")
        elif not path.exists() and parts.path not in PENDING:
            bad.append(f"{target}: no such file in the repository")
    assert not bad, "README.md links:\n" + "\n".join(bad)


def test_anchor_links_point_at_headings():
    text = _readme()
    anchors = _anchors(text)
    missing = [t for t in _links(text) if t.startswith("#") and t[1:] not in anchors]
    assert not missing, f"README.md links to missing headings: {missing}"


def test_quoted_example_config_is_the_shipped_one():
    """The config quoted under 'The config file' is examples/sentiment.yaml as shipped."""
    match = re.search(r"The shipped\n?\s*`examples/sentiment.yaml`:\n\n```yaml\n(.*?)```", _readme(), re.S)
    assert match, "README.md no longer quotes examples/sentiment.yaml under 'The config file'"
    shipped = yaml.safe_load((ROOT / "examples" / "sentiment.yaml").read_text(encoding="utf-8"))
    assert yaml.safe_load(match.group(1)) == shipped


@pytest.mark.parametrize("way", ["./tunelab", "source .venv/bin/activate"])
def test_readme_says_how_to_run_tunelab_after_the_install(way: str):
    assert way in _readme()
