"""Serving load test: `tunelab serve` (defaults, and each lever off) vs a transformers.pipeline server.

Rows: tunelab's defaults (batching: max_batch_size 32, max_wait_ms 5; sub-batches of 16 longest
first; precision auto = bf16 autocast on a CPU with native bf16); the same in fp32; fp32 with one
forward per model call (sub_batch_size 32, the levers before issue 18); batching off
(max_batch_size 1); bench/pipeline_server.py at its default fp32 and, where the CPU has native
bf16, with bf16 weights. The headline is tunelab's defaults / the fp32 pipeline (what a user who
writes the usual server gets), per connection count, with p99 beside it.

    python bench/bench_serve.py [--model DIR] [--extra LABEL=DIR ...] [--connections 8,32] [--duration 15]

Each server runs as its own process (torch threads = 2) and `wrk` (Debian package) drives it from a
second process: closed loop, N keep-alive connections, each POSTing one review text per request
(`{"inputs": text}`), texts rotating through the rotten-tomatoes test split. Per server and
concurrency: a warm-up run, then a measured run; requests/s, p50 / p99 latency from wrk's latency
distribution, non-2xx count, the server's peak RSS (VmHWM), and the cores processes other than the
server and wrk used during the measured run (``harness.run`` with the server as one of its own).
Before the load, 256 test texts are classified through each server to check accuracy and label
agreement with the pipeline.

--extra LABEL=DIR adds a `tunelab serve` row (batching on) for another model dir, e.g. the int8
output of `tunelab export --quantize int8`. Results: markdown on stdout; raw JSON and logs in
bench/out/.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

import harness
from harness import BENCH
from tunelab.models.run_info import cpu_has_native_bf16

KEY = "bench-key"
THREADS = 2
DEFAULTS = "tunelab serve, defaults (batching, sub-batches of 16, precision auto)"
PIPELINE = "transformers.pipeline + minimal FastAPI"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_rows(tmp: Path) -> list[tuple[str, str]]:
    """Rotten-tomatoes test split as tunelab prepares it (text, label)."""
    from tunelab.assets import prepare_dataset

    prepare_dataset("rotten-tomatoes", tmp / "rt")
    with open(tmp / "rt" / "test.csv", encoding="utf-8") as fh:
        return [(row["text"], row["label"]) for row in csv.DictReader(fh)]


def start(kind: str, model: str, port: int, log: Path, settings: dict[str, str]) -> subprocess.Popen[bytes]:
    env = harness.child_env(THREADS)
    if kind == "pipeline":
        cmd = [sys.executable, str(BENCH / "pipeline_server.py"), model, str(port), *settings.get("args", [])]
    else:
        cmd = [sys.executable, "-m", "tunelab.cli", "serve", model, "--port", str(port)]
        env |= {"TUNELAB_SERVE_API_KEY": KEY, "TUNELAB_SERVE_TORCH_THREADS": str(THREADS)}
        env |= {f"TUNELAB_SERVE_{name.upper()}": value for name, value in settings.items()}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if (
                httpx.get(
                    f"http://127.0.0.1:{port}/health"
                    if kind != "pipeline"
                    else f"http://127.0.0.1:{port}/docs"
                ).status_code
                == 200
            ):
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{kind} server did not start; see {log}")


@contextlib.contextmanager
def serving(
    kind: str, model: str, log: Path, settings: dict[str, Any]
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A server of ``kind`` for ``model`` on a free port while the block runs: (its URL, its process)."""
    port = free_port()
    proc = start(kind, model, port, log, settings)
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def peak_rss(rows: list[dict[str, Any]], pid: int) -> None:
    """Give every row measured on server ``pid`` its peak resident set (VmHWM, MB)."""
    rss = harness.peak_rss_mb(pid)
    for row in rows:
        row["peak_rss_mb"] = rss


def classify(url: str, texts: list[str], tunelab: bool) -> list[str]:
    """Labels for ``texts``, 32 per request."""
    labels: list[str] = []
    with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=60) as client:
        for i in range(0, len(texts), 32):
            out = client.post("/v1/predict", json={"inputs": texts[i : i + 32]}).json()
            labels += [p["label"] for p in out["predictions"]] if tunelab else [p["label"] for p in out]
    return labels


def wrk_script(texts: list[str], path: Path) -> None:
    bodies = ",\n".join(json.dumps(json.dumps({"inputs": t})) for t in texts)
    path.write_text(
        f"""local bodies = {{
{bodies}
}}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "{KEY}"
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, "/v1/predict", nil, bodies[i])
end
""",
        encoding="utf-8",
    )


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def run_wrk(url: str, script: Path, connections: int, seconds: int, server: int, log: Path) -> dict[str, Any]:
    """One wrk run against ``url``: its figures, and the cores used by others than wrk and ``server``."""
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    stdout = log.with_suffix(".out")
    measured = harness.require_ok(harness.run(cmd, log, stdout=stdout, own_pids=[server]), "wrk")
    out = stdout.read_text()
    pct = dict(re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", out, re.M))
    if "99" not in pct:
        raise RuntimeError(f"wrk reported no latency distribution (no request finished?):\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(pct["50"]),
        "p99_ms": _ms(pct["99"]),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
        "foreign_cores": measured["foreign_cores"],
        "raw": out,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="runs/sentiment/best", help="model dir (written by scripts/demo.sh)"
    )
    parser.add_argument("--extra", action="append", default=[], help="LABEL=DIR: one more tunelab row")
    parser.add_argument("--connections", default="8,32")
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="replace the bench:serve section of RESULTS.md")
    args = parser.parse_args()
    levels = [int(c) for c in args.connections.split(",")]
    native_bf16 = cpu_has_native_bf16()
    servers: list[tuple[str, str, str, dict[str, Any]]] = [
        (DEFAULTS, "tunelab", args.model, {}),
        ("tunelab serve, fp32", "tunelab", args.model, {"precision": "fp32"}),
        (
            "tunelab serve, fp32, one forward per call (sub_batch_size 32)",
            "tunelab",
            args.model,
            {"precision": "fp32", "sub_batch_size": "32"},
        ),
        ("tunelab serve, batching off (max_batch_size 1)", "tunelab", args.model, {"max_batch_size": "1"}),
        (PIPELINE, "pipeline", args.model, {}),
    ]
    if native_bf16:
        servers.append(
            (
                "transformers.pipeline (bf16 weights) + FastAPI",
                "pipeline",
                args.model,
                {"args": ["--dtype", "bfloat16"]},
            )
        )
    for spec in args.extra:
        label, model = spec.split("=", 1)
        servers.append((f"tunelab serve, {label}", "tunelab", model, {}))
    out_dir = harness.OUT
    out_dir.mkdir(exist_ok=True)
    prov = harness.provenance(threads=THREADS, packages=("fastapi", "uvicorn"), with_files=True)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rows = test_rows(tmp)
        script = tmp / "load.lua"
        wrk_script([t for t, _ in rows[:500]], script)
        check_texts, gold = [t for t, _ in rows[:256]], [label for _, label in rows[:256]]
        reference: list[str] | None = None
        for name, kind, model, settings in servers:
            with serving(kind, model, out_dir / f"serve_{len(results)}.log", settings) as (url, proc):
                labels = classify(url, check_texts, kind == "tunelab")
                if kind == "pipeline":
                    reference = labels
                accuracy = sum(a == b for a, b in zip(labels, gold, strict=True)) / len(gold)
                rows_before = len(results)
                for connections in levels:
                    wrk_log = out_dir / f"serve_{len(results)}.wrk.log"
                    run_wrk(url, script, connections, args.warmup, proc.pid, wrk_log)
                    measured = run_wrk(url, script, connections, args.duration, proc.pid, wrk_log)
                    row = {"server": name, "connections": connections, "accuracy": accuracy, **measured}
                    results.append({**row, "labels": labels})
                    print(f"{name} c={connections}: {measured['rps']:.1f} req/s", file=sys.stderr)
                peak_rss(results[rows_before:], proc.pid)
    for r in results:
        r["agree_with_pipeline"] = (
            sum(a == b for a, b in zip(r.pop("labels"), reference, strict=True)) / len(reference)
            if reference
            else None
        )
    (out_dir / "serve_results.json").write_text(json.dumps(results, indent=2))
    markdown = report(results, prov, harness.source_state(with_files=True), native_bf16)
    print(markdown)
    if args.write:
        harness.write_section("serve", markdown)


def report(
    results: list[dict[str, Any]], prov: dict[str, Any], code_after: dict[str, Any], bf16: bool
) -> str:
    by = {(r["server"], r["connections"]): r for r in results}
    ratios = [
        f"| {c} | {by[(DEFAULTS, c)]['rps'] / by[(PIPELINE, c)]['rps']:.2f}x | "
        f"{by[(DEFAULTS, c)]['p99_ms']:.0f} vs {by[(PIPELINE, c)]['p99_ms']:.0f} | "
        f"{by[(DEFAULTS, c)]['agree_with_pipeline']:.3f} |"
        for c in sorted({r["connections"] for r in results})
        if (DEFAULTS, c) in by and (PIPELINE, c) in by
    ]
    lines = [
        "## Serving benchmark: `tunelab serve` vs `transformers.pipeline` behind FastAPI",
        "",
        *harness.provenance_lines(prov, code_after),
        f"- CPU native bf16 (what precision auto goes by): {'yes' if bf16 else 'no'}",
        "",
        "| connections | requests/s tunelab defaults / pipeline | p99 (ms) tunelab vs pipeline "
        "| labels equal to the pipeline's (256 rows) |",
        "|---|---|---|---|",
        *ratios,
        "",
        f"- {harness.CONTENTION_NOTE}; wrk and the server under test are not counted",
        "",
        "| server | connections | requests/s | p50 (ms) | p99 (ms) | requests | non-2xx | peak RSS (MB) "
        "| accuracy (256 test rows) | agrees with pipeline | other cores |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['server']} | {r['connections']} | {r['rps']:.1f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['requests']} | {r['non_2xx']} | {r['peak_rss_mb']:.0f} | "
            f"{r['accuracy']:.3f} | {r['agree_with_pipeline']:.3f} | {r['foreign_cores']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
