#!/usr/bin/env python3
"""River (online learning, one sample at a time) against fenestra's online model, same stream.

    python3 bench/river_baseline.py [--keys 100] [--windows 600] [--history 16]

Builds the seasonal stream of tests/ml.rs's kind (per-key offset + sinusoid + window noise),
runs `fenestra run --model forecast:linear` on it (CPU), and gives River's LinearRegression
(with a StandardScaler) the same per-key history of window means, prequentially
(predict_one, then learn_one). Prints both samples/s and the prequential MAE over the second
half, with the noise floor. Needs the peers' virtualenv with `river` installed.
"""
import argparse
import json
import os
import subprocess
import time

import numpy as np
import polars as pl


def stream(keys, windows, path, seed=1):
    rng = np.random.default_rng(seed)
    off = rng.uniform(0, 100, keys)
    ph = rng.uniform(0, 2 * np.pi, keys)
    per = 4
    t = np.repeat(np.arange(windows), keys * per)
    k = np.tile(np.repeat(np.arange(keys), per), windows)
    wn = rng.normal(0, 0.5, (windows, keys))
    pattern = off[:, None] + 10 * np.sin(2 * np.pi * np.arange(windows)[None, :] / 10 + ph[:, None])
    v = pattern.T[t, k] + wn[t, k] + rng.normal(0, 0.1, len(t))
    ts = t * 1000 + np.tile(np.arange(keys * per), windows) * (1000 // (keys * per + 1))
    pl.DataFrame({"ts": ts.astype(np.int64), "key": k.astype(np.int64), "value": v}).write_parquet(path)
    return pattern


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--windows", type=int, default=600)
    ap.add_argument("--history", type=int, default=16)
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "fenestra"))
    ap.add_argument("--dir", default="/tmp/fenestra-river")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    src = os.path.join(a.dir, "season.parquet")
    out = os.path.join(a.dir, "windows.parquet")
    metrics = os.path.join(a.dir, "metrics.json")
    pattern = stream(a.keys, a.windows, src)
    subprocess.run([a.bin, "run", "--input", src, "--output", out, "--window", "tumble:1s", "--watermark-delay", "0ms",
                    "--model", "forecast:linear", "--history", str(a.history), "--lr", "0.003", "--features", "mean_value",
                    "--backend", "cpu", "--quiet", "--metrics-output", metrics], check=True)
    fm = json.load(open(metrics))
    w = pl.read_parquet(out).sort(["window_start", "key"])
    key = w["key"].to_numpy()
    t = w["window_start"].to_numpy() // 1000
    mean = w["mean_value"].to_numpy()
    pred = w["prediction"].to_numpy()
    half = t >= a.windows // 2
    ok = half & ~np.isnan(pred.astype(float))
    floor = np.mean(np.abs(pattern[key[half], t[half]] - mean[half]))
    fen_mae = np.mean(np.abs(pred[ok] - mean[ok]))

    from river import linear_model, optim, preprocessing
    model = preprocessing.StandardScaler() | linear_model.LinearRegression(optimizer=optim.SGD(0.005))
    hist = {}
    errs = []
    n = 0
    t0 = time.perf_counter()
    for k, tt, y in zip(key, t, mean):
        h = hist.setdefault(k, [])
        if len(h) >= a.history:
            x = {f"lag{i}": h[-a.history + i] for i in range(a.history)}
            p = model.predict_one(x)
            if tt >= a.windows // 2:
                errs.append(abs(p - y))
            model.learn_one(x, y)
            n += 1
        h.append(y)
    secs = time.perf_counter() - t0
    river_sps = n / secs
    res = {
        "samples": n,
        "river_samples_per_sec": round(river_sps),
        "river_mae_second_half": float(np.mean(errs)),
        "fenestra_train_samples_per_sec": round(fm["train_samples_per_sec"]),
        "fenestra_mae_second_half": float(fen_mae),
        "noise_floor_mae": float(floor),
        "train_speedup": round(fm["train_samples_per_sec"] / river_sps, 1),
    }
    print(json.dumps(res))


if __name__ == "__main__":
    main()
