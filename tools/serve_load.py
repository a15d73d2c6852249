#!/usr/bin/env python3
"""Drives `chatglm serve` with N concurrent streaming greedy clients and prints the aggregate
decode rate, the end-to-end rate and the time to first token.

Usage (the server already running, e.g. `chatglm serve -m F --parallel 8 -c 512 -t 2`):

    python3 tools/serve_load.py --url http://127.0.0.1:8080 --clients 4 --max-tokens 64

Each client sends `--requests` chat requests one after the other (`stream: true`,
`temperature: 0`; `ignore_eos` is not an OpenAI field, so pick a prompt and a `--max-tokens`
the model does not stop before: a request that stops early is reported). Every prompt starts
with a tag unique to the run, the client and the request, so that no slot holds a cached
prefix of it from an earlier run (which would make its prompt nearly free). One short
request runs first, untimed (`--warmup 0` skips it): it pages the mapped model in.

Reported (times on this side of the connection):

- time to first token (TTFT): from sending a request to its first content chunk; p50 and p95
  (nearest rank) over the requests.
- aggregate decode rate: the tokens generated after each request's first one, summed over the
  requests, divided by the wall time during which at least one request was decoding (the
  union of the spans from each request's first token to its end). Prompt reading outside
  those spans is not counted; a prompt read while others decode slows them, and that is.
- end-to-end rate: every generated token (first ones included) divided by the wall time from
  the first request sent to the last reply's end.
- per stream: the mean over requests of (tokens - 1) / (end - first token).

Standard library only. `--json` prints one JSON object instead of the line.
"""

import argparse
import json
import math
import statistics
import sys
import threading
import time
import urllib.request


def one_request(url, prompt, max_tokens):
    """Sends one streaming chat request; returns its timings and token count."""
    body = json.dumps(
        {
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    req = urllib.request.Request(
        url + "/v1/chat/completions", body, {"Content-Type": "application/json"}
    )
    start = time.monotonic()
    first = None
    tokens = 0
    with urllib.request.urlopen(req, timeout=3600) as r:
        for line in r:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            elif first is None and event["choices"] and event["choices"][0]["delta"].get("content"):
                first = time.monotonic()
    end = time.monotonic()
    return {"start": start, "first": first or end, "end": end, "tokens": tokens}


def union_length(spans):
    """Total length of the union of the (start, end) intervals."""
    total, reach = 0.0, None
    for s, e in sorted(spans):
        if reach is None or s > reach:
            total += e - s
            reach = e
        elif e > reach:
            total += e - reach
            reach = e
    return total


def nearest_rank(sorted_values, q):
    """The q-quantile (0..1) of sorted values by nearest rank."""
    rank = math.ceil(q * len(sorted_values))
    return sorted_values[min(len(sorted_values), max(rank, 1)) - 1]


def summarize(results, clients, max_tokens):
    """The figures of the module docs, as a dict."""
    decode_tokens = sum(max(r["tokens"] - 1, 0) for r in results)
    decode_wall = union_length([(r["first"], r["end"]) for r in results])
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    ttft = sorted(r["first"] - r["start"] for r in results)
    return {
        "clients": clients,
        "requests": len(results),
        "tokens": sum(r["tokens"] for r in results),
        "short_requests": sum(1 for r in results if r["tokens"] < max_tokens),
        "decode_tok_s": decode_tokens / max(decode_wall, 1e-9),
        "end_to_end_tok_s": sum(r["tokens"] for r in results) / max(wall, 1e-9),
        "per_stream_tok_s": statistics.mean(
            max(r["tokens"] - 1, 0) / max(r["end"] - r["first"], 1e-9) for r in results
        ),
        "ttft_p50_s": nearest_rank(ttft, 0.50),
        "ttft_p95_s": nearest_rank(ttft, 0.95),
        "wall_s": wall,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--requests", type=int, default=1, help="requests per client, in turn")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--prompt", default="Write a long story about a robot.")
    p.add_argument("--warmup", type=int, default=1, help="untimed requests before the run")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args()
    if a.clients < 1 or a.requests < 1 or a.max_tokens < 2:
        p.error("--clients and --requests must be at least 1, --max-tokens at least 2")
    run = f"{time.time_ns() % 10**9:09d}"
    for i in range(a.warmup):
        one_request(a.url, f"[warm-up {run}.{i}] {a.prompt}", 4)
    results = []
    errors = []
    lock = threading.Lock()

    def client(c):
        for i in range(a.requests):
            try:
                r = one_request(a.url, f"[{run}-{c}.{i}] {a.prompt}", a.max_tokens)
            except Exception as e:  # reported below; the other clients go on
                with lock:
                    errors.append(f"client {c} request {i}: {e}")
                continue
            with lock:
                results.append(r)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in errors:
        print(f"serve_load: {e}", file=sys.stderr)
    if not results:
        sys.exit("serve_load: no request succeeded")
    s = summarize(results, a.clients, a.max_tokens)
    s["failed"] = len(errors)
    if a.json:
        print(json.dumps(s))
    else:
        print(
            f"clients {s['clients']}: {s['requests']} requests ({s['failed']} failed, "
            f"{s['short_requests']} stopped early), {s['tokens']} tokens; "
            f"aggregate decode {s['decode_tok_s']:.2f} tok/s; "
            f"end-to-end {s['end_to_end_tok_s']:.2f} tok/s; "
            f"per stream {s['per_stream_tok_s']:.2f} tok/s; "
            f"time to first token p50 {s['ttft_p50_s']:.2f} s, p95 {s['ttft_p95_s']:.2f} s"
        )
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
