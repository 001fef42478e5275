#!/usr/bin/env python3
"""A bounded load run against a running `llava-edge serve` (or llama-server) on loopback: a
fixed number of text chats, at most CONCURRENCY in flight, under a time limit. Prints
requests/s, p50/p99 latency and aggregate decode tokens/s (completion tokens over wall time).
Every request asks for MAX_TOKENS greedy tokens with `ignore_eos` (llama-server's extension,
which serve accepts too), so both servers decode the same count on random-weight files.

Usage: scripts/serve-load.py URL CONCURRENCY REQUESTS MAX_TOKENS [TIME_LIMIT_S]
"""

import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse


def run_load(url, conc, total, max_tokens, limit=300.0):
    """Sends `total` chats, `conc` at a time, until done or `limit` seconds; returns the
    summary as a dict (requests answered, errors, unsent, latencies, tokens/s)."""
    u = urllib.parse.urlparse(url)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("loopback only")
    lock = threading.Lock()
    state = {"next": 0, "lat": [], "tokens": 0, "prompt": 0, "errors": 0, "short": 0}
    deadline = time.time() + limit

    def worker():
        while True:
            with lock:
                if state["next"] >= total or time.time() > deadline:
                    return
                i = state["next"]
                state["next"] += 1
            body = json.dumps({
                "messages": [{"role": "user", "content": f"Request {i}: tell me a story."}],
                "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            })
            t0 = time.time()
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=max(1.0, deadline - t0))
            try:
                c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
                r = c.getresponse()
                data = json.loads(r.read())
                ok = r.status == 200
            except Exception:
                ok, data = False, {}
            finally:
                c.close()
            with lock:
                if ok:
                    state["lat"].append(time.time() - t0)
                    n = data["usage"]["completion_tokens"]
                    state["tokens"] += n
                    state["prompt"] += data["usage"]["prompt_tokens"]
                    state["short"] += n < max_tokens
                else:
                    state["errors"] += 1

    t0 = time.time()
    threads = [threading.Thread(target=worker) for _ in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    lat = sorted(state["lat"])
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")
    return {
        "concurrency": conc, "requests": len(lat), "errors": state["errors"],
        "unsent": total - state["next"], "short_replies": state["short"],
        "prompt_tokens": state["prompt"], "completion_tokens": state["tokens"],
        "wall_s": round(wall, 2), "req_per_s": round(len(lat) / wall, 3),
        "p50_s": round(statistics.median(lat), 3) if lat else None, "p99_s": round(p(0.99), 3),
        "decode_tok_per_s": round(state["tokens"] / wall, 1),
    }


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    url, conc, total, max_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    limit = float(sys.argv[5]) if len(sys.argv) > 5 else 300.0
    print(json.dumps(run_load(url, conc, total, max_tokens, limit)))


if __name__ == "__main__":
    main()
