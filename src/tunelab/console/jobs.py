"""Runs started from the page: validated exactly as ``tunelab train`` validates, then trained by it.

A start is ``python -m tunelab.cli train <example> --key value ... --train.output_dir <root>/<name>``
in a subprocess: the same override parsing, schema, registries and loop as the command line, and the
console stays responsive while it trains. The child's output goes to a log file outside the run dir
(``train`` refuses a fresh output dir holding files it did not write).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tunelab.config import NOT_RUN_CONFIGS, load_raw, validate_config
from tunelab.errors import ConfigError
from tunelab.training.plan import resolve

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# One problem of a ConfigError message: "key.path: what is wrong" (errors.format_validation_error and
# plan.resolve both write them so); lines that name no key are shown as general errors.
_PROBLEM = re.compile(r"([A-Za-z_][\w.\[\]-]*): (.+)")


def field_errors(exc: ConfigError) -> list[dict[str, str]]:
    """The problems of a config error as ``{"field": key path or "", "message": ...}`` for the form."""
    lines = [line for line in str(exc).splitlines() if line.strip() and line != "invalid config:"]
    out = []
    for line in lines:
        match = _PROBLEM.fullmatch(line.strip())
        out.append({"field": match[1], "message": match[2]} if match else {"field": "", "message": line})
    return out


def example_names(examples: Path) -> list[str]:
    """The run configs below ``examples`` as ``/``-separated relative names, app settings excluded.

    Recipes keep their run configs in sub-directories (``apps/recommend/recommend.yaml``); files
    named as :data:`~tunelab.config.NOT_RUN_CONFIGS` (app settings, search spaces, safety gates)
    cannot start a run.
    """
    return sorted(
        p.relative_to(examples).as_posix()
        for p in examples.rglob("*.yaml")
        if not p.name.endswith(NOT_RUN_CONFIGS) and p.is_file() and not p.is_symlink()
    )


def example_path(examples: Path, example: str) -> Path:
    """The example config named ``example`` (one of :func:`example_names`), or ConfigError.

    Only listed names are accepted, so no ``..``, absolute path or symlink can leave ``examples``.
    """
    if example not in example_names(examples):
        raise ConfigError(f"example: no example config {example!r} in {examples}")
    return examples / example


def check_start(
    examples: Path, root: Path, example: str, name: str, fields: dict[str, str], started: Collection[str]
) -> list[str]:
    """Validate a start like ``tunelab validate`` does; the train command's arguments, or ConfigError.

    ``fields`` are overrides by key path (values parsed as on the command line); the run's output dir
    is always ``root/name``, a new directory, and no name ``started`` here already (whose process may
    not have created its dir yet).
    """
    problems = []
    if not _NAME.fullmatch(name):
        problems.append("name: letters, digits, '.', '_' and '-' only (at most 64), not starting with '.'")
    elif (root / name).exists() or name in started:
        problems.append(f"name: {root / name} exists; choose another name")
    path = example_path(examples, example)
    overrides = [arg for key, value in fields.items() for arg in (f"--{key}", value)]
    overrides += ["--train.output_dir", str(root / name)]
    try:
        resolve(validate_config(load_raw(path, overrides)))
    except ConfigError as exc:
        problems.extend(
            f"{p['field']}: {p['message']}" if p["field"] else p["message"] for p in field_errors(exc)
        )
    if problems:
        raise ConfigError("invalid config:\n" + "\n".join(problems))
    return [str(path), *overrides]


@dataclass
class Job:
    """A training subprocess and its log."""

    process: subprocess.Popen[bytes]
    log: Path
    handle: IO[bytes]

    def state(self) -> dict[str, Any]:
        """Exit code (None while it runs) and the log's last lines (why it failed, if it did)."""
        code = self.process.poll()
        tail = self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-20:]
        return {"running": code is None, "returncode": code, "log": tail}


@dataclass
class Jobs:
    """The runs this console started, by name; stopped (SIGTERM: train saves nothing half-written)."""

    logs: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tunelab-ui-")))
    jobs: dict[str, Job] = field(default_factory=dict)

    def start(self, name: str, train_args: list[str]) -> Job:
        """Run ``tunelab train`` with ``train_args`` in the current dir, where ``check_start`` read them."""
        log = self.logs / f"{name}.log"
        handle = open(log, "wb")  # noqa: SIM115 - the child writes it until it exits
        cmd = [sys.executable, "-m", "tunelab.cli", "train", *train_args]
        process = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT)
        self.jobs[name] = Job(process, log, handle)
        return self.jobs[name]

    def running(self, name: str) -> bool:
        """Whether the console started ``name`` and it is still training."""
        job = self.jobs.get(name)
        return job is not None and job.process.poll() is None

    def stop_all(self, timeout: float = 30.0) -> None:
        """Ask every running job to stop and wait for it (the console is shutting down)."""
        for job in self.jobs.values():
            if job.process.poll() is None:
                job.process.terminate()
        for job in self.jobs.values():
            try:
                job.process.wait(timeout)
            except subprocess.TimeoutExpired:
                job.process.kill()
                job.process.wait()
            job.handle.close()
