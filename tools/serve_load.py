#!/usr/bin/env python3
"""Drives `chatglm serve` with N concurrent streaming greedy clients and prints the aggregate
decode rate and the time to first token.

Usage (the server already running, e.g. `chatglm serve -m F --parallel 8 -c 512`):

    python3 tools/serve_load.py --url http://127.0.0.1:8080 --clients 4 --max-tokens 32

Each client sends `--requests` chat requests one after the other (`stream: true`,
`temperature: 0`, `ignore_eos` is not an OpenAI field, so pick a prompt and a `--max-tokens`
the model does not stop before). Reported: per request the time to its first token and its
decode rate; overall the aggregate decode rate, the tokens after each request's first one
divided by the span from the first first-token to the last reply's end. Standard library
only.
"""

import argparse
import json
import statistics
import threading
import time
import urllib.request


def one_request(url, prompt, max_tokens, out):
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
    out.append({"start": start, "first": first or end, "end": end, "tokens": tokens})


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--requests", type=int, default=1, help="requests per client, in turn")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--prompt", default="Write a long story about a robot.")
    a = p.parse_args()
    results = []

    def client(c):
        for i in range(a.requests):
            one_request(a.url, f"{a.prompt} ({c}.{i})", a.max_tokens, results)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    decode_tokens = sum(max(r["tokens"] - 1, 0) for r in results)
    span = max(r["end"] for r in results) - min(r["first"] for r in results)
    ttft = sorted(r["first"] - r["start"] for r in results)
    p95 = ttft[min(len(ttft) - 1, int(round(0.95 * (len(ttft) - 1))))]
    print(
        f"clients {a.clients}: {len(results)} requests, {sum(r['tokens'] for r in results)} tokens; "
        f"aggregate decode {decode_tokens / max(span, 1e-9):.2f} tok/s; "
        f"per stream {statistics.mean((r['tokens'] - 1) / max(r['end'] - r['first'], 1e-9) for r in results):.2f} tok/s; "
        f"time to first token p50 {statistics.median(ttft):.2f} s, p95 {p95:.2f} s"
    )


if __name__ == "__main__":
    main()
