#!/usr/bin/env python3
"""fenestra against DuckDB (and Polars) on the shared peer workload, measured side by side.

    python3 bench/peers.py [--n 5000000] [--repeat 3] [--peers ../shared/peers]

Needs the peers' virtualenv (see ../shared/peers/README.md: /tmp/peers-venv with polars, duckdb,
numpy, pyarrow) and a release build (`cargo build --release`). Generates the workload file if it
is missing, then for each query runs DuckDB and `fenestra run` alternately `--repeat` times on
the same Parquet file, checks fenestra's rows against DuckDB's with the peers' compare.py, and
prints one JSON line per run plus a Markdown table of medians and ratios.

fenestra's time is the whole `fenestra run` process: reading the Parquet file, aggregating and
writing the Parquet result (DuckDB's timed region also reads the input and writes the output).

fenestra runs with a watermark delay of 501 ms, one more than the workload's largest disorder
(500 ms). With 500 ms no event is late, but a session can fire at the exact bound: its watermark
`max - 500 - 1` reaches `end - 1` when the next event of its key, exactly `gap` after its last one,
arrives 500 ms behind the maximum. Streaming semantics (fenestra's, and Flink's with a per-event
watermark) then purge the session, and that event starts a new one, where DuckDB, a batch
engine, merges the two (the 10M-event file has one such pair in 4.1M sessions). One more
millisecond of delay rules this out, so the streaming answer equals the batch one.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# one more than the workload's largest disorder (see above)
WATERMARK_DELAY = "501ms"

QUERIES = {
    # query: (window, aggs, rename for compare.py)
    "q1": ("tumble:1s", "count,sum,min,max,mean", {"count": "cnt", "mean_value": "avg_value"}),
    "q2": ("hop:10s:1s", "count,mean", {"count": "cnt", "mean_value": "avg_value"}),
    "q3": ("session:100ms", "count,sum", {"count": "cnt"}),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--peers", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "peers"))
    ap.add_argument("--venv", default="/tmp/peers-venv")
    ap.add_argument("--data", default="/tmp/peers-data")
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "fenestra"))
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--queries", default="q1,q2,q3")
    args = ap.parse_args()
    py = os.path.join(args.venv, "bin", "python")
    peers = os.path.abspath(args.peers)
    os.makedirs(args.data, exist_ok=True)
    tag = f"{args.n // 1_000_000}M" if args.n % 1_000_000 == 0 else str(args.n)
    events = os.path.join(args.data, f"events_{tag}.parquet")
    if not os.path.exists(events):
        subprocess.run([py, os.path.join(peers, "gen_events.py"), "--n", str(args.n), "--out", events], check=True)
    results = {}
    for q in args.queries.split(","):
        window, aggs, rename = QUERIES[q]
        duck_out = os.path.join(args.data, f"out_duckdb_{q}_{tag}.parquet")
        fen_out = os.path.join(args.data, f"out_fenestra_{q}_{tag}.parquet")
        times = {"duckdb": [], "fenestra": []}
        for r in range(args.repeat):
            line = subprocess.run([py, os.path.join(peers, "duckdb_peer.py"), "--query", q, "--input", events,
                                   "--output", duck_out], check=True, capture_output=True, text=True).stdout
            times["duckdb"].append(json.loads(line.strip().splitlines()[-1])["seconds"])
            t0 = time.perf_counter()
            subprocess.run([args.bin, "run", "--input", events, "--output", fen_out, "--window", window,
                            "--aggs", aggs, "--backend", args.backend, "--watermark-delay", WATERMARK_DELAY,
                            "--quiet"], check=True, capture_output=True)
            times["fenestra"].append(time.perf_counter() - t0)
            print(json.dumps({"query": q, "run": r, "duckdb_s": times["duckdb"][-1],
                              "fenestra_s": round(times["fenestra"][-1], 4)}), flush=True)
        # rows must match DuckDB's (column names of the workload)
        renamed = fen_out.replace(".parquet", "_cmp.parquet")
        subprocess.run([py, "-c", "import polars as pl, sys, json; pl.read_parquet(sys.argv[1]).rename(json.loads(sys.argv[3]))"
                        ".write_parquet(sys.argv[2])", fen_out, renamed, json.dumps(rename)], check=True)
        cmp = subprocess.run([py, os.path.join(peers, "compare.py"), "--query", q, duck_out, renamed],
                             capture_output=True, text=True)
        match = cmp.returncode == 0
        print(cmp.stdout.strip(), flush=True)
        d, f = statistics.median(times["duckdb"]), statistics.median(times["fenestra"])
        results[q] = (window, d, f, match)
    print(f"\n| query | window | DuckDB s | fenestra s | fenestra events/s | speed-up vs DuckDB | rows match |")
    print("|---|---|---:|---:|---:|---:|---|")
    for q, (window, d, f, match) in results.items():
        print(f"| {q} | {window} | {d:.3f} | {f:.3f} | {args.n / f / 1e6:.2f} M | {d / f:.2f}x | {'yes' if match else 'NO'} |")
    sys.exit(0 if all(m for *_, m in results.values()) else 1)


if __name__ == "__main__":
    main()
