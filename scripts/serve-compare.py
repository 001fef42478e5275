#!/usr/bin/env python3
"""`llava-edge serve` against `llama-server` on one model file, alternating: for each round and
each --parallel level, start one server, run the bounded load of serve-load.py against it, stop
it, then the other (the order flips every round), so drift of a shared machine hits both
alike. Same threads, same context per slot (llama-server's -c is split across its -np slots),
same max_tokens with ignore_eos. Prints one JSON line per run, then medians per server and
level and the ratios. Loopback only; nothing is built or downloaded.

Usage: scripts/serve-compare.py --ours target/release/llava-edge --llama-server PATH \\
           -m MODEL.gguf [-t 2] [--parallel 1,2,4,8] [--requests 16] [--max-tokens 64] \\
           [--ctx 512] [--rounds 1] [--llama-env LD_PRELOAD=...]
"""

import argparse
import http.client
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("serve_load", os.path.join(HERE, "serve-load.py"))
serve_load = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(serve_load)


def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def wait_healthy(port, proc, limit=120.0):
    t0 = time.time()
    while time.time() - t0 < limit:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            if get(port, "/health")[0] == 200:
                return time.time() - t0
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server not ready in time")


def our_metrics(port):
    """serve's own counters: decode steps, rows and seconds."""
    out = {}
    for line in get(port, "/metrics")[1].splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def command(kind, a, n, port):
    if kind == "ours":
        return [a.ours, "serve", "-m", a.model, "-t", str(a.threads), "--parallel", str(n),
                "-c", str(a.ctx), "--port", str(port)] + a.ours_arg
    return [a.llama_server, "-m", a.model, "-t", str(a.threads), "-tb", str(a.threads),
            "-np", str(n), "-c", str(a.ctx * n), "--port", str(port), "--no-webui"] + a.llama_arg


def one(kind, a, n, port, log):
    env = dict(os.environ)
    if kind == "llama":
        env.update(kv.split("=", 1) for kv in a.llama_env)
    proc = subprocess.Popen(command(kind, a, n, port), stdout=log, stderr=log, env=env)
    try:
        wait_healthy(port, proc)
        # One short request first: page faults and first-call costs are not the load's.
        serve_load.run_load(f"http://127.0.0.1:{port}", 1, 1, 4, 60)
        before = our_metrics(port) if kind == "ours" else None
        r = serve_load.run_load(f"http://127.0.0.1:{port}", n, a.requests, a.max_tokens, a.time_limit)
        if before is not None:
            after = our_metrics(port)
            d = {k: after[k] - before.get(k, 0.0) for k in after}
            steps = d.get("llava_edge_decode_steps_total", 0.0)
            if steps:
                r["ms_per_step"] = round(1e3 * d["llava_edge_decode_seconds_total"] / steps, 2)
                r["rows_per_step"] = round(d["llava_edge_decode_rows_total"] / steps, 2)
                r["decode_tok_per_s_in_steps"] = round(
                    d["llava_edge_decode_rows_total"] / d["llava_edge_decode_seconds_total"], 1)
        return r
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ours", required=True)
    p.add_argument("--llama-server")
    p.add_argument("-m", "--model", required=True)
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("--parallel", default="1,2,4,8")
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--ctx", type=int, default=512, help="context per slot")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--first-round", type=int, default=0,
                   help="index of the first round (odd: llama-server first), to alternate across runs")
    p.add_argument("--time-limit", type=float, default=300.0)
    p.add_argument("--port", type=int, default=18100)
    p.add_argument("--llama-env", action="append", default=[], help="KEY=VALUE for llama-server")
    p.add_argument("--ours-arg", action="append", default=[], help="extra serve argument")
    p.add_argument("--llama-arg", action="append", default=[], help="extra llama-server argument")
    p.add_argument("--log", default="/dev/null", help="servers' output")
    a = p.parse_args()
    kinds = ["ours"] + (["llama"] if a.llama_server else [])
    levels = [int(x) for x in a.parallel.split(",")]
    runs = []
    with open(a.log, "a") as log:
        for rnd in range(a.first_round, a.first_round + a.rounds):
            for n in levels:
                order = kinds if rnd % 2 == 0 else kinds[::-1]
                for kind in order:
                    r = one(kind, a, n, a.port, log)
                    r.update(server=kind, parallel=n, round=rnd)
                    runs.append(r)
                    print(json.dumps(r), flush=True)
    med = lambda xs: round(statistics.median(xs), 3) if xs else None
    print("\n| parallel | server | req/s | p50 s | p99 s | decode tok/s (aggregate) | errors+unsent |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    table = {}
    for n in levels:
        for kind in kinds:
            rs = [r for r in runs if r["server"] == kind and r["parallel"] == n]
            row = {k: med([r[k] for r in rs]) for k in ("req_per_s", "p50_s", "p99_s", "decode_tok_per_s")}
            table[(kind, n)] = row
            lost = sum(r["errors"] + r["unsent"] for r in rs)
            print(f"| {n} | {kind} | {row['req_per_s']} | {row['p50_s']} | {row['p99_s']} | "
                  f"{row['decode_tok_per_s']} | {lost} |")
    single = table[("ours", levels[0])]["decode_tok_per_s"]
    for n in levels:
        line = f"parallel {n}: ours {table[('ours', n)]['decode_tok_per_s']} tok/s = " \
               f"{table[('ours', n)]['decode_tok_per_s'] / single:.2f}x our parallel {levels[0]}"
        if "llama" in kinds:
            line += f", {table[('ours', n)]['decode_tok_per_s'] / table[('llama', n)]['decode_tok_per_s']:.2f}x llama-server"
        print(line)


if __name__ == "__main__":
    sys.exit(main())
