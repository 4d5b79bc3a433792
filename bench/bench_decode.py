"""Continuous batching of `/v1/chat/completions`: tunelab serve's running decode batch vs one at a time.

Rows, each a `tunelab serve` process of the shipped SmolLM2-135M-Instruct (torch threads 2, precision
auto): continuous batching at `decode_batch_size` 8 (the default) and 16, and `decode_batch_size` 1,
which decodes each request to its end with transformers' `model.generate` before the next starts
(the plain Hugging Face way, and tunelab's behaviour before issue 18's continuous batching).

    python bench/bench_decode.py [--clients 1,8] [--requests 16] [--max-tokens 48] [--write]

Load: N client threads (closed loop, one keep-alive connection each) send chat completions of the
shipped tunelab-instruct instructions, spread over its categories (instruction + input as the user
message, greedy, `max_tokens` fixed) until `--requests` have been answered; a warm-up request goes
first. Per row and client count: wall time, requests/s, generated tokens/s (the replies'
`usage.completion_tokens` over the wall time), p50 / p99 latency, the server's peak RSS, the cores
other processes used meanwhile, and how many replies equal the one-at-a-time server's (greedy in
fp32 decodes the same tokens batched or not; under bf16 autocast rows of different padding may round
differently). The headline is continuous batching at the default / one at a time, at 8 clients.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

import harness
from bench_serve import KEY, THREADS, peak_rss, serving
from tunelab.models.run_info import cpu_has_native_bf16

MODEL = "smollm2-135m-instruct"
ROWS = [
    ("continuous batching, decode_batch_size 8 (default)", {}),
    ("continuous batching, decode_batch_size 16", {"decode_batch_size": "16"}),
    ("one at a time (decode_batch_size 1: transformers generate per request)", {"decode_batch_size": "1"}),
]
DEFAULT, ONE = ROWS[0][0], ROWS[2][0]


def prompts(n: int) -> list[str]:
    """``n`` shipped tunelab-instruct rows, spread over the file's categories, as user messages."""
    from tunelab.assets.instruct import INSTRUCT_DIR

    lines = (INSTRUCT_DIR / "instructions.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return [f"{r['instruction']}\n\n{r['input']}".strip() for r in rows[:: max(1, len(rows) // n)][:n]]


def ask(client: httpx.Client, prompt: str, max_tokens: int) -> dict[str, Any]:
    """One greedy chat completion: its reply, generated tokens and latency."""
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0}
    start_s = time.perf_counter()
    response = client.post("/v1/chat/completions", json=body)
    response.raise_for_status()
    out = response.json()
    return {
        "reply": out["choices"][0]["message"]["content"],
        "tokens": out["usage"]["completion_tokens"],
        "latency_s": time.perf_counter() - start_s,
    }


def load(url: str, texts: list[str], clients: int, max_tokens: int, server: int) -> dict[str, Any]:
    """``clients`` closed-loop threads answering ``texts`` (each once, in order of taking)."""
    queue = list(enumerate(texts))
    answers: dict[int, dict[str, Any]] = {}

    def client_loop() -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=600) as client:
            while queue:
                i, text = queue.pop(0)
                answers[i] = ask(client, text, max_tokens)

    with harness.measure([server]) as m, ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client_loop) for _ in range(clients)]:
            future.result()
    latencies = sorted(a["latency_s"] for a in answers.values())
    tokens = sum(a["tokens"] for a in answers.values())
    return {
        "wall_s": m["wall_s"],
        "rps": len(texts) / m["wall_s"],
        "tokens": tokens,
        "tokens_per_s": tokens / m["wall_s"],
        "p50_s": statistics.median(latencies),
        "p99_s": latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
        "foreign_cores": m["foreign_cores"],
        "replies": [answers[i]["reply"] for i in range(len(texts))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--write", action="store_true", help="replace the bench:decode section of RESULTS.md")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    texts = prompts(args.requests)
    out_dir = harness.OUT
    out_dir.mkdir(exist_ok=True)
    prov = harness.provenance(threads=THREADS, packages=("fastapi", "uvicorn"), with_files=True)
    results: list[dict[str, Any]] = []
    for name, settings in ROWS:
        log = out_dir / f"decode_{len(results)}.log"
        settings = {"max_new_tokens": str(args.max_tokens), **settings}
        with serving("tunelab", MODEL, log, settings) as (url, proc):
            with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=600) as client:
                ask(client, texts[0], 4)  # warm-up
            rows_before = len(results)
            for clients in levels:
                harness.wait_for_quiet(120)
                measured = load(url, texts, clients, args.max_tokens, proc.pid)
                results.append({"server": name, "clients": clients, **measured})
                print(f"{name} clients={clients}: {measured['tokens_per_s']:.1f} tokens/s", file=sys.stderr)
            peak_rss(results[rows_before:], proc.pid)
    reference = {r["clients"]: r["replies"] for r in results if r["server"] == ONE}
    for r in results:
        replies = r.pop("replies")
        r["same_replies"] = sum(a == b for a, b in zip(replies, reference[r["clients"]], strict=True))
    (out_dir / "decode_results.json").write_text(json.dumps(results, indent=2))
    markdown = report(results, prov, harness.source_state(with_files=True), args)
    print(markdown)
    if args.write:
        harness.write_section("decode", markdown)


def report(results: list[dict[str, Any]], prov: dict[str, Any], code_after: dict[str, Any], args: Any) -> str:
    by = {(r["server"], r["clients"]): r for r in results}
    ratios = [
        f"| {c} | {by[(DEFAULT, c)]['tokens_per_s'] / by[(ONE, c)]['tokens_per_s']:.2f}x | "
        f"{by[(DEFAULT, c)]['p50_s']:.2f} vs {by[(ONE, c)]['p50_s']:.2f} | "
        f"{by[(DEFAULT, c)]['p99_s']:.2f} vs {by[(ONE, c)]['p99_s']:.2f} | "
        f"{by[(DEFAULT, c)]['same_replies']}/{args.requests} |"
        for c in sorted({r["clients"] for r in results})
    ]
    lines = [
        "## Continuous batching: `/v1/chat/completions` with a running decode batch vs one at a time",
        "",
        *harness.provenance_lines(prov, code_after),
        f"- model: {MODEL}; {args.requests} chat requests (tunelab-instruct), greedy, "
        f"max_tokens {args.max_tokens}; CPU native bf16: {'yes' if cpu_has_native_bf16() else 'no'} "
        "(precision auto decodes in bf16 only where it is native)",
        "",
        "| clients | generated tokens/s, continuous (default) / one at a time | p50 latency (s) "
        "| p99 latency (s) | replies equal to one at a time |",
        "|---|---|---|---|---|",
        *ratios,
        "",
        f"- {harness.CONTENTION_NOTE}; the server under test is not counted",
        "",
        "| server | clients | wall (s) | requests/s | generated tokens | tokens/s | p50 (s) | p99 (s) "
        "| peak RSS (MB) | same replies | other cores |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['server']} | {r['clients']} | {r['wall_s']:.1f} | {r['rps']:.2f} | {r['tokens']} | "
            f"{r['tokens_per_s']:.1f} | {r['p50_s']:.2f} | {r['p99_s']:.2f} | {r['peak_rss_mb']:.0f} | "
            f"{r['same_replies']}/{args.requests} | {r['foreign_cores']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
