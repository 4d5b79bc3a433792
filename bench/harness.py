"""The one benchmark harness: measured subprocesses, CPU contention, provenance, RESULTS.md sections.

Every script in bench/ imports it as ``import harness`` (bench/ is ``sys.path[0]`` when a script runs
as ``python bench/<script>.py``). Only the standard library is imported here, so ``--help`` and a
worker's measured start-up do not pay for torch.

Why each piece exists:

- ``run`` measures a child with ``os.wait4``: its ``ru_maxrss`` is the child's own peak RSS (the
  parent's size never mixes in), and its user / system CPU seconds come with it.
- ``measure`` reports the cores other processes kept busy meanwhile (``/proc/stat`` minus this
  process, its reaped children and any live process under test). On the 2-core machines these benches
  run on, one concurrent test run made OpenMP 10x slower, so every figure is recorded with it.
- ``provenance`` records what produced a figure: package versions, the git commit and whether src/
  had uncommitted changes, and the CPU: its model name and the avx2 / avx512f / avx512_bf16 / amx_bf16
  flags (the machines differ, and the bf16 and int8 kernels torch picks change with them).
- ``write_section`` regenerates one block of RESULTS.md, between ``<!-- bench:NAME:start -->`` and
  ``<!-- bench:NAME:end -->``, and leaves every hand-written line outside the markers as it is.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import importlib.metadata as md
import json
import os
import platform
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# Every bench script's process starts by importing this module: like tunelab's CLI, it never lets a
# library reach the Hugging Face hub (set before transformers/datasets are imported, which read it once).
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"  # logs, raw JSON and run dirs (git-ignored)
RESULTS = BENCH / "RESULTS.md"
PACKAGES = ("tunelab", "torch", "transformers", "peft", "accelerate", "datasets", "tokenizers")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
CONTENTION_NOTE = (
    "other cores = average number of cores other processes kept busy while that figure was measured "
    "(/proc/stat); above 0.1 the figure is disturbed"
)

# --------------------------------------------------------------------------- processes


def peak_rss_mb(pid: int | None = None) -> float:
    """Peak RSS in MB of this process (``ru_maxrss``), or of the live process ``pid`` (``VmHWM``)."""
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    found = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    if found is None:
        raise RuntimeError(f"/proc/{pid}/status has no VmHWM line; is {pid} a live process?")
    return int(found.group(1)) / 1024


def busy_cpu_seconds() -> float:
    """CPU seconds spent busy (all cores, all processes) since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the live process ``pid``, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of every child it has reaped."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@contextlib.contextmanager
def measure(own_pids: Sequence[int] = ()) -> Iterator[dict[str, float]]:
    """Wall time of the block and the cores other processes kept busy meanwhile.

    The yielded dict is filled when the block ends: ``wall_s``, ``own_cpu_s`` (this process, the
    children it reaped and the live processes ``own_pids``, e.g. a server under load) and
    ``foreign_cores`` = (busy CPU seconds of the machine - ``own_cpu_s``) / ``wall_s``.
    """
    out: dict[str, float] = {}
    pids0 = {pid: process_cpu_seconds(pid) for pid in own_pids}
    busy0, own0, t0 = busy_cpu_seconds(), own_cpu_seconds(), time.time()
    yield out
    wall = time.time() - t0
    own = own_cpu_seconds() - own0 + sum(process_cpu_seconds(pid) - cpu for pid, cpu in pids0.items())
    out.update(wall_s=wall, own_cpu_s=own, foreign_cores=max(0.0, busy_cpu_seconds() - busy0 - own) / wall)


def process_figures(m: dict[str, float]) -> dict[str, float]:
    """This process's peak RSS, with the wall time and contention of a ``measure`` block (rounded, JSON)."""
    return {
        "peak_rss_mb": round(peak_rss_mb()),
        "wall_s": round(m["wall_s"], 1),
        "foreign_cores": round(m["foreign_cores"], 2),
    }


def wait_for_quiet(max_wait: float, threshold: float = 0.15) -> float:
    """Wait (up to ``max_wait`` s) until other processes use < ``threshold`` cores; returns that usage."""
    deadline = time.time() + max_wait
    while True:
        with measure() as m:
            time.sleep(3)
        if m["foreign_cores"] < threshold or time.time() >= deadline:
            return m["foreign_cores"]
        print(
            f"  machine busy ({m['foreign_cores']:.2f} cores used by other processes); waiting...",
            file=sys.stderr,
        )
        time.sleep(10)


def child_env(threads: int | None = None, *, offline: bool = False, **extra: str) -> dict[str, str]:
    """Environment of a measured child: this checkout's src/ and bench/ first on the path.

    ``threads`` sets ``OMP_NUM_THREADS`` (torch's intra-op threads); ``offline`` sets the Hugging Face
    offline switches; ``extra`` is added as is.
    """
    env = dict(os.environ)
    path = [str(ROOT / "src"), str(BENCH), env.get("PYTHONPATH", "")]
    env.update(PYTHONPATH=os.pathsep.join(filter(None, path)), PYTHONUNBUFFERED="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    if offline:
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env | extra


def run(
    cmd: Sequence[str | Path],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    stdout: Path | None = None,
    max_wait_idle: float = 0.0,
    own_pids: Sequence[int] = (),
) -> dict[str, Any]:
    """Run ``cmd`` to its end: wall time, peak RSS, CPU seconds and the contention meanwhile.

    Output goes to ``log`` (stdout and stderr together; stdout to its own file when ``stdout`` is
    given, e.g. a worker's JSON result). ``max_wait_idle`` > 0 first waits up to that long for the
    machine to go quiet. A failed command does not raise: ``exit`` says so (see ``require_ok``).
    """
    idle_before = wait_for_quiet(max_wait_idle) if max_wait_idle > 0 else None
    log.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as files:
        err = files.enter_context(open(log, "wb"))
        out = files.enter_context(open(stdout, "wb")) if stdout else err
        with measure(own_pids) as m:
            proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdout=out, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)  # rusage of this child alone
            proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "cmd": [str(c) for c in cmd],
        "exit": proc.returncode,
        "wall_s": m["wall_s"],
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "user_s": usage.ru_utime,
        "sys_s": usage.ru_stime,
        "child_cpu_s": usage.ru_utime + usage.ru_stime,
        "foreign_cores": m["foreign_cores"],
        "foreign_cores_before": idle_before,
        "log": rel(log),
    }


def require_ok(row: dict[str, Any], what: str) -> dict[str, Any]:
    """``row`` when its command exited 0; else SystemExit naming ``what``, its log and the log's tail."""
    if row["exit"] != 0:
        tail = (ROOT / row["log"]).read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"{what} failed (exit {row['exit']}); see {row['log']}:\n{tail}")
    return row


def run_worker(cmd: Sequence[str | Path], log: Path, what: str, **kw: Any) -> dict[str, Any]:
    """Run a worker whose last stdout line is its JSON result: that result plus ``run``'s measures."""
    result = log.with_suffix(".out.json")
    row = require_ok(run(cmd, log, stdout=result, **kw), what)
    return json.loads(result.read_text(encoding="utf-8").strip().splitlines()[-1]) | row


# --------------------------------------------------------------------------- provenance


def rel(path: Path | str) -> str:
    """``path`` relative to the repo root when it is inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _flock_prefix() -> list[str]:
    """``flock -x LOCK`` when this process runs under flock (the benches share a CPU lock file)."""
    with contextlib.suppress(OSError):
        words = [w.decode() for w in Path(f"/proc/{os.getppid()}/cmdline").read_bytes().split(b"\0") if w]
        if words and Path(words[0]).name == "flock":
            head = []
            for word in words[1:]:
                if Path(word).name.startswith("python"):
                    return ["flock", *head]
                head.append(word)
    return []


def command_line(args: Sequence[str] | None = None) -> str:
    """How this script was started, as a shell line with repo paths made relative.

    ``args`` replaces ``sys.argv[1:]`` when the recorded command should differ (e.g. no machine paths).
    """
    args = sys.argv[1:] if args is None else args
    words = ["python", rel(sys.argv[0]), *(str(a).replace(f"{ROOT}{os.sep}", "") for a in args)]
    return shlex.join([*_flock_prefix(), *words])


def cpu_info() -> dict[str, Any]:
    """CPU model name, the CPU_FLAGS it has, core counts (from /proc/cpuinfo and the affinity mask)."""
    model, flags = "unknown CPU", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    return {
        "cpu": model,
        "flags": {flag: flag in flags for flag in CPU_FLAGS},
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
    }


def versions(*extra: str) -> dict[str, str]:
    """Python and package versions (installed metadata; nothing is imported)."""
    out = {"python": platform.python_version()}
    for pkg in (*PACKAGES, *extra):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "-"
    return out


def source_state(with_files: bool = False) -> dict[str, Any]:
    """Commit, dirty flag and uncommitted src/ changes, and a hash over every src/*.py file.

    ``with_files`` keeps the per-file hashes, so that ``code_line`` can name the files that changed
    while a long benchmark ran.
    """

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.rstrip("\n")  # not strip(): porcelain lines start with a status column

    files = {
        str(path.relative_to(ROOT)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted((ROOT / "src").rglob("*.py"))
    }
    changes = [line[3:] for line in git("status", "--porcelain", "--", "src").splitlines()]
    listed = ", ".join(changes[:8]) + (f" and {len(changes) - 8} more" if len(changes) > 8 else "")
    state = {
        "commit": git("rev-parse", "--short", "HEAD") or "?",
        "dirty": bool(changes),
        "src_changes": listed or "none",
        "src_sha256": hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:12],
    }
    return state | {"files": files} if with_files else state


def code_line(before: dict[str, Any], after: dict[str, Any] | None = None) -> str:
    """git commit, dirty flag and src/ hash; with ``after``, whether src/ changed during the run."""
    dirty = f"DIRTY, uncommitted src/ changes: {before['src_changes']}" if before["dirty"] else "clean"
    line = f"git {before['commit']}, src/ {dirty} (src/*.py sha256 {before['src_sha256']})"
    if after is None or after["src_sha256"] == before["src_sha256"]:
        return line
    old, new = before.get("files", {}), after.get("files", {})
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return (
        f"{line}; src/ CHANGED during the run to {after['src_sha256']} at git {after['commit']}"
        + (f", files: {', '.join(changed)}" if changed else "")
        + ": check whether they touch the measured path"
    )


def provenance(
    command: str | None = None,
    *,
    threads: int | str | None = None,
    packages: Sequence[str] = (),
    with_files: bool = False,
) -> dict[str, Any]:
    """What produced a figure: date, command, machine (CPU model and flags), versions, code state.

    ``threads`` is the torch thread count the measured code ran with; by default this process's, when
    it has imported torch, else ``OMP_NUM_THREADS``. ``packages`` adds versions beyond PACKAGES.
    """
    if threads is None:
        torch = sys.modules.get("torch")
        threads = torch.get_num_threads() if torch else os.environ.get("OMP_NUM_THREADS", "torch default")
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command or command_line(),
        "machine": cpu_info() | {"torch_threads": threads, "os": f"{platform.system()} {platform.release()}"},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "versions": versions(*packages),
        "code": source_state(with_files),
    }


def provenance_lines(prov: dict[str, Any], code_after: dict[str, Any] | None = None) -> list[str]:
    """The provenance block of a RESULTS.md section, as markdown list lines."""
    m, load = prov["machine"], prov["load_average"]
    flags = ", ".join(f"{flag} {'yes' if has else 'no'}" for flag, has in m["flags"].items())
    return [
        f"- date: {prov['date_utc']} (load average at the start: {' / '.join(map(str, load))})",
        f"- command: `{prov['command']}`",
        f"- machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), torch threads "
        f"{m['torch_threads']}; CPU flags: {flags}; {m['os']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in prov["versions"].items()),
        "- code: " + code_line(prov["code"], code_after),
    ]


# --------------------------------------------------------------------------- RESULTS.md


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of section ``name`` in RESULTS.md."""
    if not re.fullmatch(r"[a-z0-9_-]+", name):
        raise ValueError(f"section name {name!r}: use lowercase letters, digits, '-' and '_'")
    return f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"


def replace_section(text: str, name: str, markdown: str) -> str:
    """``text`` with section ``name``'s block replaced by ``markdown`` (appended when it has none)."""
    start, end = markers(name)
    block = f"{start}\n{markdown.strip(chr(10))}\n{end}"
    n_start, n_end = text.count(start), text.count(end)
    if n_start == n_end == 0:
        return f"{text.rstrip(chr(10))}\n\n{block}\n" if text.strip() else f"{block}\n"
    i, j = text.find(start), text.find(end)
    if n_start != 1 or n_end != 1 or j < i:
        raise ValueError(
            f"section {name!r}: expected one {start} before one {end}, found {n_start} and {n_end}; "
            "fix the markers by hand"
        )
    return text[:i] + block + text[j + len(end) :]


def write_section(name: str, markdown: str, path: Path = RESULTS) -> None:
    """Replace only the ``name`` block of ``path`` (created at the end if absent); atomic.

    The directory is locked (flock) for the read-modify-write, so two benches finishing together do
    not drop each other's section; the new text goes to a temp file that is fsynced and renamed.
    """
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(replace_section(old, name, markdown))
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)  # also releases the lock
