#!/usr/bin/env python3
"""Serving throughput and latency: `locomlx serve` against `mlx_lm.server` and against itself with
cross-request batching off, on the same base model, adapters and mixed workload, in one run.

N concurrent clients (default 1, 8, 32) each send their share of a mixed workload: questions from the
benchmarks of four shipped adapters, asked of the adapter by name, and as many asked of `auto` (the
router picks). `mlx_lm.server` gets the same questions the only way it can serve adapters: an adapter
path per request (the `auto` questions go to the adapter of their source domain, the right answer a
router could give). Every answer is streamed; the client records time to first token and latency,
and counts the generated tokens with the base model's tokenizer. Each server runs alone (one heavy
process at a time on a laptop) and its peak memory is read from /proc when it stops.

    python scripts/bench_serve.py                    # writes docs/serve-bench.md
    python scripts/bench_serve.py --clients 1,8 --max-tokens 32 --json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = ["sentiment-rt-spring", "spam-assassin", "math-chainsum", "summary-xsum"]
PEERS = ["locomlx", "locomlx-no-cross-batching", "mlx_lm.server"]


def workload(n: int) -> list[dict]:
    """n requests cycling through (adapter by name, auto) x the four adapters, each a benchmark question."""
    from locomlx.prompt import example_messages

    rows = {}
    for name in ADAPTERS:
        lines = (ROOT / "adapters" / name / "eval" / "benchmark.jsonl").read_text().splitlines()
        rows[name] = [json.loads(line) for line in lines if line.strip()]
    jobs = []
    for i in range(n):
        adapter = ADAPTERS[i % len(ADAPTERS)]
        row = rows[adapter][(i // len(ADAPTERS)) % len(rows[adapter])]
        messages = example_messages(row["instruction"], row.get("input", ""))
        jobs.append({"adapter": adapter, "model": "auto" if (i // len(ADAPTERS)) % 2 else adapter,
                     "messages": messages})
    return jobs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(peer: str, port: int, base_dir: str, log: Path) -> subprocess.Popen:
    bin_dir = Path(sys.executable).parent
    if peer == "mlx_lm.server":
        command = [sys.executable, "-m", "mlx_lm.server", "--model", base_dir, "--port", str(port),
                   "--log-level", "WARNING"]
    else:
        command = [str(bin_dir / "locomlx"), "serve", "--port", str(port), "--adapters-dir", str(ROOT / "adapters"),
                   "--max-batch", "32", "--max-queue", "256"]
        if peer == "locomlx-no-cross-batching":
            command.append("--no-cross-request-batching")
    out = open(log, "w")
    process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    for _ in range(1200):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/v1/models")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            pass
        if process.poll() is not None:
            raise SystemExit(f"{peer} exited at start:\n{log.read_text()}")
        time.sleep(0.25)
    raise SystemExit(f"{peer} did not start in 5 minutes:\n{log.read_text()}")


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def stop(process: subprocess.Popen) -> float | None:
    peak = peak_rss_mb(process.pid)
    process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
    return peak


def ask(port: int, body: dict) -> dict:
    """One streamed request: time to the first content token, latency and the whole text."""
    start_time = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.read()[:300]!r}")
    first, pieces = None, []
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        for choice in chunk.get("choices", []):
            text = (choice.get("delta") or {}).get("content") or ""
            if text:
                first = first or time.perf_counter()
                pieces.append(text)
    end = time.perf_counter()
    return {"ttft": (first or end) - start_time, "latency": end - start_time, "text": "".join(pieces)}


def request_body(peer: str, job: dict, max_tokens: int, base_dir: str) -> dict:
    body = {"messages": job["messages"], "max_tokens": max_tokens, "temperature": 0.0, "stream": True}
    if peer == "mlx_lm.server":
        return {**body, "model": base_dir, "adapters": str(ROOT / "adapters" / job["adapter"])}
    return {**body, "model": job["model"]}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_level(peer: str, port: int, clients: int, jobs: list[dict], max_tokens: int, base_dir: str,
              count_tokens) -> dict:
    shares = [jobs[i::clients] for i in range(clients)]

    def client(share):
        results = []
        for job in share:
            try:
                results.append(ask(port, request_body(peer, job, max_tokens, base_dir)))
            except (OSError, RuntimeError, http.client.HTTPException) as exc:
                results.append({"error": f"{type(exc).__name__}: {exc}"})
        return results

    start_time = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, shares) for r in rs]
    wall = time.perf_counter() - start_time
    failed = [r["error"] for r in results if "error" in r]
    results = [r for r in results if "error" not in r] or [{"ttft": wall, "latency": wall, "text": ""}]
    tokens = sum(count_tokens(r["text"]) for r in results)
    return {"peer": peer, "clients": clients, "requests": len(results), "failed": len(failed),
            "errors": sorted(set(failed))[:3], "tokens": tokens, "seconds": wall,
            "tokens_per_second": tokens / wall, "ttft_p50": statistics.median(r["ttft"] for r in results),
            "ttft_p95": percentile([r["ttft"] for r in results], 0.95),
            "latency_p95": percentile([r["latency"] for r in results], 0.95),
            "texts": [r["text"] for r in results]}


def markdown(rows: list[dict], peaks: dict, settings: dict) -> str:
    lines = ["# Serving: locomlx serve against mlx_lm.server", "",
             "Written by `python scripts/bench_serve.py` "
             f"(clients {settings['clients']}, {settings['requests']} requests per level or one per client, "
             f"max_tokens {settings['max_tokens']}, greedy). Mixed workload: questions from the benchmarks of "
             f"{', '.join(ADAPTERS)}, half asked of the adapter by name and half of `auto` (the router); "
             "`mlx_lm.server` gets an adapter path per request (auto questions: their source adapter). "
             "Throughput is generated tokens (counted with the base tokenizer) per second of wall time; "
             "TTFT is the time to the first streamed token. One server at a time, on "
             f"{os.cpu_count()} CPU cores.", "",
             "| clients | server | tokens/s | vs mlx_lm.server | TTFT p50 (s) | TTFT p95 (s) | latency p95 (s) "
             "| failed requests |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for clients in settings["clients"]:
        level = [r for r in rows if r["clients"] == clients]
        peer_tps = next((r["tokens_per_second"] for r in level if r["peer"] == "mlx_lm.server"), None)
        for r in level:
            ratio = f"{r['tokens_per_second'] / peer_tps:.1f}x" if peer_tps else "-"
            lines.append(f"| {clients} | {r['peer']} | {r['tokens_per_second']:.1f} | {ratio} | {r['ttft_p50']:.2f} "
                         f"| {r['ttft_p95']:.2f} | {r['latency_p95']:.2f} | {r['failed']} |")
    errors = [f"- {r['peer']}, {r['clients']} clients: {'; '.join(r['errors'])}" for r in rows if r["failed"]]
    if errors:
        lines += ["", "Failed requests (not counted in the other columns):", "", *errors]
    lines += ["", "Peak resident memory of each server process over the whole run:", ""]
    lines += [f"- {peer}: {mb:.0f} MB" if mb else f"- {peer}: not read" for peer, mb in peaks.items()]
    lines += ["", "`locomlx serve` computes in float32 on a CPU (the engine's default there); `mlx_lm.server` "
              "runs the converted 4-bit model as it is, reloading it whenever the adapter changes and batching "
              "only requests of the same adapter.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,8,32", help="Concurrent client counts, comma-separated.")
    parser.add_argument("--requests", type=int, default=16,
                        help="Requests per level (at least one per client).")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--peers", default=",".join(PEERS), help=f"Servers to measure: {', '.join(PEERS)}.")
    parser.add_argument("--output", default=str(ROOT / "docs" / "serve-bench.md"))
    parser.add_argument("--json", action="store_true", help="Print the rows as JSON too.")
    args = parser.parse_args()
    import locomlx  # noqa: F401 - the fast BLAS before anything loads mlx
    from locomlx.models.resolve import resolve_model

    from transformers import AutoTokenizer

    base_dir = str(resolve_model(None).path)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)

    def count_tokens(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    clients = [int(c) for c in args.clients.split(",")]
    peers = args.peers.split(",")
    rows, peaks = [], {}
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    for peer in peers:
        port = free_port()
        print(f"starting {peer} ...", file=sys.stderr)
        process = start(peer, port, base_dir, logs / f"bench-serve-{peer}.log")
        try:
            ask(port, request_body(peer, workload(1)[0], 4, base_dir))  # warm-up
            for n in clients:
                jobs = workload(max(args.requests, n))
                row = run_level(peer, port, n, jobs, args.max_tokens, base_dir, count_tokens)
                rows.append(row)
                print(f"  {n:3d} clients: {row['tokens_per_second']:7.1f} tok/s, TTFT p95 {row['ttft_p95']:.2f} s, "
                      f"latency p95 {row['latency_p95']:.2f} s, {row['failed']} failed", file=sys.stderr)
        finally:
            peaks[peer] = stop(process)
    settings = {"clients": clients, "requests": args.requests, "max_tokens": args.max_tokens}
    page = markdown(rows, peaks, settings)
    Path(args.output).write_text(page)
    print(page)
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "texts"} for r in rows], indent=2))


if __name__ == "__main__":
    main()
