"""`toolprm bench serve`: a bounded load test of `toolprm serve`.

Starts the real server on a free localhost port (or uses ``--url``), then runs
``--clients`` threads that each send ``--requests`` chat completions. Every
request names its own tool (``tool_<client>_<request>``) with ``tool_choice:
required``, so the grammar forces that name: an answer that carries another
tool's name was mixed up with another request. Reports the status counts (429
is the queue bound at work, not an error), lost, mixed and duplicated answers,
p50/p95 latency of the answered requests and throughput, and writes them with
every request's record to ``--out``.

The server runs one request at a time (it does not batch requests together).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from toolprm.errors import ToolprmError

from .report import replace_block


class ServerProcess:
    """``toolprm serve`` in a child process on a free localhost port, up when constructed."""

    def __init__(self, *args: str, api_key: str | None = None, threads: int = 1, startup: float = 180):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, TOOLPRM_THREADS=str(threads))
        env.pop("TOOLPRM_API_KEY", None)
        cmd = [sys.executable, "-m", "toolprm.engine.cli", "serve", "--port", str(self.port),
               "--log-level", "warning", *args] + (["--api-key", api_key] if api_key else [])
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + startup
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ToolprmError(f"the server exited: {self.proc.stdout.read()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.5)
        self.stop()
        raise ToolprmError(f"the server did not answer /health within {startup:g} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@dataclass
class LoadReport:
    records: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        statuses: dict[str, int] = {}
        for r in self.records:
            statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
        ok = [r for r in self.records if r["status"] == 200]
        lat = sorted(r["seconds"] for r in ok)
        ids = [r["id"] for r in ok]
        return {
            "requests": len(self.records), "statuses": statuses,
            "answered": len(ok), "rejected_429": statuses.get("429", 0),
            "errors": sum(1 for r in self.records if r["status"] not in (200, 429)),
            "lost": sum(1 for r in self.records if r["status"] is None),
            "mixed": sum(1 for r in ok if r["names"] != [r["tool"]]),
            "duplicated": len(ids) - len(set(ids)),
            "retry_after_missing": sum(1 for r in self.records if r["status"] == 429 and not r["retry_after"]),
            "latency_p50_s": round(statistics.median(lat), 3) if lat else None,
            "latency_p95_s": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 3) if lat else None,
            "throughput_rps": round(len(ok) / self.seconds, 3) if self.seconds else None,
            "wall_s": round(self.seconds, 2),
        }


def load(url: str, clients: int, requests: int, *, api_key: str | None = None, max_tokens: int = 40,
         timeout: float = 600) -> LoadReport:
    """``clients`` threads x ``requests`` requests each, all at once."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def one(c: int, k: int) -> dict:
        tool = f"tool_{c}_{k}"
        body = {"messages": [{"role": "user", "content": f"Run {tool} with n={c * 10 + k}."}],
                "tools": [{"type": "function", "function": {"name": tool, "parameters": {
                    "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}],
                "tool_choice": "required", "max_tokens": max_tokens}
        rec = {"client": c, "request": k, "tool": tool, "status": None, "names": [], "id": None,
               "retry_after": None, "seconds": None}
        t0 = time.perf_counter()
        try:
            resp = httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=timeout)
        except httpx.HTTPError as e:
            rec["error"] = f"{type(e).__name__}: {e}"
            return rec
        rec["seconds"] = round(time.perf_counter() - t0, 4)
        rec["status"] = resp.status_code
        rec["retry_after"] = resp.headers.get("retry-after")
        if resp.status_code == 200:
            data = resp.json()
            rec["id"] = data["id"]
            rec["names"] = [c["function"]["name"] for c in data["choices"][0]["message"].get("tool_calls") or []]
        else:
            rec["error"] = resp.text[:300]
        return rec

    def client(c: int) -> list[dict]:
        return [one(c, k) for k in range(requests)]

    report = LoadReport()
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for recs in pool.map(client, range(clients)):
            report.records.extend(recs)
    report.seconds = time.perf_counter() - t0
    return report


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="toolprm bench serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=4, help="requests per client (default 4)")
    ap.add_argument("--queue-size", type=int, default=8, help="the server's queue bound (default 8)")
    ap.add_argument("--strategy", default="greedy", help="the server's strategy (default greedy)")
    ap.add_argument("--max-tokens", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the server (default 1)")
    ap.add_argument("--url", default=None, help="a running server to load instead of starting one")
    ap.add_argument("--out", default=None, help="folder for summary.json and requests.jsonl")
    ap.add_argument("--readme", default=None, help="also put the figures into this file's serve-results block")
    a = ap.parse_args(argv)
    if a.clients < 1 or a.requests < 1:
        raise ToolprmError("--clients and --requests must be positive")
    server = None if a.url else ServerProcess("--strategy", a.strategy, "--queue-size", str(a.queue_size),
                                              threads=a.threads)
    try:
        url = a.url or server.url
        print(f"loading {url}: {a.clients} clients x {a.requests} requests, queue bound {a.queue_size}",
              file=sys.stderr)
        report = load(url, a.clients, a.requests, max_tokens=a.max_tokens)
    finally:
        if server is not None:
            server.stop()
    summary = report.summary()
    summary["command"] = "toolprm bench serve " + " ".join(argv)
    summary["config"] = {"clients": a.clients, "requests": a.requests, "queue_size": a.queue_size,
                         "strategy": a.strategy, "max_tokens": a.max_tokens, "threads": a.threads}
    print(json.dumps(summary, indent=1))
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        with open(out / "requests.jsonl", "w") as f:
            for r in report.records:
                f.write(json.dumps(r) + "\n")
    if a.readme:
        replace_block(a.readme, "serve-results", markdown(summary))
    return 0


def markdown(summary: dict) -> str:
    """The load test's figures as a README block."""
    c = summary["config"]
    rows = [("requests", summary["requests"]), ("answered (200)", summary["answered"]),
            ("turned away by the queue bound (429, with Retry-After)", summary["rejected_429"]),
            ("other statuses", summary["errors"]), ("lost / mixed / duplicated answers",
                                                      f"{summary['lost']} / {summary['mixed']} / {summary['duplicated']}"),
            ("latency of answered requests, p50 / p95",
             f"{summary['latency_p50_s']} s / {summary['latency_p95_s']} s"),
            ("throughput", f"{summary['throughput_rps']} answered requests/s over {summary['wall_s']} s")]
    lines = [f"Measured with `{summary['command']}` ({c['clients']} clients x {c['requests']} requests at once, "
             f"queue bound {c['queue_size']}, strategy {c['strategy']}, max_tokens {c['max_tokens']}, "
             f"{c['threads']} torch thread(s) in the server).", "", "| | |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)
