"""``POST /v1/predict``: single-row latency and throughput with the inference log on and off,
and the latency shadow mode adds, measured side by side in one run.

A champion (and a challenger, for shadow) is trained on simulated rows and registered in
a temporary CT_HOME; ``ct-assets api`` (one worker) is started once per configuration:

* logging on (every served prediction written to the event log) vs ``CT_SERVING_LOG=0``;
* shadow mode (the challenger scores every request too) vs off, logging on.

Latency: sequential single-row requests over one keep-alive connection (p50, p99).
Throughput: 16 keep-alive connections. Targets: p99 with logging under 10 ms,
throughput with logging at least 50% of without, shadow under +30% latency.
Usage: python benchmarks/bench_predict.py [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_ingest_api import HOST, free_port, start_server, stop_server
from loadgen import LoadResult, build_request, run_load


def register_models(home: Path) -> dict[str, float]:
    """Champion v1 and challenger v2 in the registry of ``home``; returns a sample row."""
    import polars as pl

    from ct_assets.data.compile import describe_file
    from ct_assets.registry import Registry
    from ct_assets.settings import Settings
    from ct_assets.simulate import SimulationSpec, simulate_frame
    from ct_assets.training.train import TrainParams, train_model

    settings = Settings.from_env().with_home(home)
    registry = Registry.from_settings(settings)
    frame = simulate_frame(SimulationSpec(rows=4000, seed=3, drift="none"))
    n = frame.height
    dataset = frame.drop("concept").with_columns(
        label=pl.col("label").cast(pl.String),
        event_id=pl.Series([f"e{i}" for i in range(n)]),
        log_offset=pl.Series(range(n)),
        split=pl.Series(["train"] * (n - n // 5) + ["holdout"] * (n // 5)),
    )
    settings.datasets_dir.mkdir(parents=True, exist_ok=True)
    path = settings.datasets_dir / "bench.parquet"
    dataset.write_parquet(path)
    info = describe_file(path, "bench", n)
    for seed in (1, 2):
        result = train_model(dataset, TrainParams(num_boost_round=100, seed=seed))
        version = registry.log_candidate(result, info, {}, dataset.head(5))
        if seed == 1:
            registry.promote(version.version, "bench")
    row = dataset.row(0, named=True)
    return {k: row[k] for k in ("x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "channel")}


def measure(
    home: Path, features: dict[str, float], env_extra: dict[str, str], seconds: float
) -> tuple[LoadResult, LoadResult]:
    port = free_port()
    env = {
        **os.environ,
        "CT_HOME": str(home),
        "CT_API_TOKEN": "bench",
        "CT_SERVING_POLL_SECONDS": "1",
        **env_extra,
    }
    argv = [sys.executable, "-m", "ct_assets.cli", "api", "--host", HOST, "--port", str(port)]
    proc = start_server(argv, env, port)
    try:
        body = json.dumps({"features": features, "user_id": "u-1"}).encode()
        request = build_request("/v1/predict", body, "application/json", HOST, "bench")

        def make(i: int) -> tuple[bytes, int]:
            return request, 1

        run_load(HOST, port, make, connections=1, seconds=1.0)  # warm up
        latency = run_load(HOST, port, make, connections=1, seconds=seconds)
        throughput = run_load(HOST, port, make, connections=16, seconds=seconds)
    finally:
        stop_server(proc)
    return latency, throughput


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ct-bench-predict-") as tmp:
        home = Path(tmp) / "ct"
        features = register_models(home)
        from ct_assets.registry import Deployment, Registry
        from ct_assets.settings import Settings

        registry = Registry.from_settings(replace(Settings.from_env(), home=home))
        results = {}
        for name, env in (("logging off", {"CT_SERVING_LOG": "0"}), ("logging on", {})):
            results[name] = measure(home, features, env, args.seconds)
        registry.set_deployment(Deployment("shadow", 1.0), by="bench", reason="bench")
        results["shadow, logging on"] = measure(home, features, {}, args.seconds)
    for name, (latency, throughput) in results.items():
        ok = sum(n for s, n in latency.statuses.items() if s == 200)
        print(
            f"{name:20s} p50 {latency.percentile(0.5) * 1000:6.2f} ms  "
            f"p99 {latency.percentile(0.99) * 1000:6.2f} ms  "
            f"{throughput.requests_per_second:8.0f} req/s (16 connections)  "
            f"[{ok} of {latency.requests} sequential answered 200]"
        )
    off, on = results["logging off"], results["logging on"]
    shadow = results["shadow, logging on"]
    p99 = on[0].percentile(0.99) * 1000
    share = on[1].requests_per_second / max(off[1].requests_per_second, 1e-9)
    extra = shadow[0].percentile(0.5) / max(on[0].percentile(0.5), 1e-9) - 1
    print(f"p99 with logging {p99:.2f} ms (target < 10: {'met' if p99 < 10 else 'NOT met'})")
    verdict = "met" if share >= 0.5 else "NOT met"
    print(f"throughput with logging {share:.0%} of without (target >= 50%: {verdict})")
    verdict = "met" if extra < 0.3 else "NOT met"
    print(f"shadow adds {extra:+.0%} median latency (target < 30%: {verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
