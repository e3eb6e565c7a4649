"""``python -m bench``: run the benchmarks of PERF.md and print their figures.

stdout: one JSON line per figure, then a table; bench/results/latest.json gets
them all. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.ingest import b1_shape, b1c_shape, b1s_shape, run_ingest
from bench.live import run_b2, run_b4
from bench.queries import run_queries
from bench.report import Figure, json_lines, save, table
from bench.workload import Pool, generate_pool
from bench.yardsticks import duckdb_group_by, msgspec_decode

BENCHES = (
    "B1",
    "B1s",
    "B2",
    "B4",
    "yardsticks",
    "B3",
    "B1-cluster",
    "B1c",
    "B2-cluster",
    "B3-cluster",
)
POOL_EVENTS = 1_000_000
STORE_EVENTS = 10_000_000
BUSY_LOAD = 0.5


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only",
        action="append",
        choices=BENCHES,
        help="run only this benchmark (repeatable); default: all",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median reported)")
    parser.add_argument("--b1-seconds", type=float, default=9.0, help="load per B1 run")
    parser.add_argument("--b1s-seconds", type=float, default=5.0, help="load per B1s run")
    parser.add_argument(
        "--b1c-seconds", type=float, default=20.0, help="load per B1c run (sustained commits)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        action="append",
        help="B1c: worker processes (repeatable); default: 1, 2 and 4",
    )
    parser.add_argument(
        "--events", type=int, default=POOL_EVENTS, help="events generated for the workload file"
    )
    parser.add_argument(
        "--store-events",
        type=int,
        default=STORE_EVENTS,
        help="events stored for B3 (queries) and B6 (restart, rebuild)",
    )
    parser.add_argument("--b3-seconds", type=float, default=8.0, help="load per B3 query run")
    return parser.parse_args(argv)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def yardsticks(pool: Pool, runs: int) -> list[Figure]:
    duck = [duckdb_group_by(pool.path)[0] for _ in range(runs)]
    say(f"  DuckDB read_json + GROUP BY: {', '.join(f'{r:,.0f}' for r in duck)} events/s")
    decode = [msgspec_decode(pool.path)[0] for _ in range(runs)]
    say(f"  msgspec decode: {', '.join(f'{r:,.0f}' for r in decode)} events/s")
    return [
        Figure.of_runs("yardstick", "duckdb_read_json_group_by_events_per_s", duck),
        Figure.of_runs("yardstick", "msgspec_decode_events_per_s", decode),
    ]


def ratios(figures: list[Figure]) -> list[Figure]:
    """B1 events/s as a fraction of each yardstick (per run, against the yardstick median)."""
    found = {(f.bench, f.metric): f for f in figures}
    b1 = found.get(("B1", "events_per_s"))
    if b1 is None:
        return []
    out: list[Figure] = []
    for name, metric in (
        ("fraction_of_duckdb", "duckdb_read_json_group_by_events_per_s"),
        ("fraction_of_msgspec", "msgspec_decode_events_per_s"),
    ):
        yard = found.get(("yardstick", metric))
        if yard is not None:
            out.append(Figure.of_runs("B1", name, [r / yard.value for r in b1.runs]))
    return out


def attempt(
    name: str, figures: list[Figure], notes: dict[str, Any], bench: Callable[[], Any]
) -> None:
    """Run one benchmark; a failure is reported and noted, and the others still run."""
    try:
        found, notes[name] = bench()
    except Exception as exc:  # one broken benchmark must not hide the rest
        say(f"  {name} FAILED: {exc!r}")
        notes[name] = {"failed": repr(exc)}
        return
    figures.extend(found)


def run(args: argparse.Namespace, pool: Pool) -> tuple[list[Figure], dict[str, Any]]:
    chosen = args.only or list(BENCHES)
    figures: list[Figure] = []
    notes: dict[str, Any] = {
        "workload": {"events": pool.events, "bytes": pool.size_bytes, "file": "temporary"},
    }
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as client:
        shapes = (b1_shape(args.b1_seconds), b1s_shape(args.b1s_seconds))
        sustained = [b1c_shape(args.b1c_seconds, w) for w in args.workers or (1, 2, 4)]
        for shape in (*shapes, shapes[0].on_cluster(), *sustained):
            if shape.bench in chosen or (shape.bench.startswith("B1c-") and "B1c" in chosen):
                say(f"{shape.bench}: {args.runs} runs of {shape.duration_s:g} s")
                attempt(
                    shape.bench,
                    figures,
                    notes,
                    lambda s=shape: run_ingest(client, s, pool, args.runs),
                )
        for name, runner in (("B2", run_b2), ("B4", run_b4)):
            if name in chosen:
                say(f"{name}: {args.runs} runs")
                attempt(
                    name,
                    figures,
                    notes,
                    lambda r=runner: r(client, pool, args.runs, say),
                )
        if "B2-cluster" in chosen:
            say(f"B2 on the cluster topology: {args.runs} runs")
            attempt(
                "B2-cluster",
                figures,
                notes,
                lambda: run_b2(client, pool, args.runs, say, cluster=True),
            )
        stores = [(b, b == "B3-cluster") for b in ("B3", "B3-cluster") if b in chosen]
        if stores:
            with tempfile.TemporaryDirectory(prefix="hypemeter-bench-store-") as tmp:
                say(f"B3: generating {args.store_events:,} events ...")
                store_pool = generate_pool(Path(tmp) / "store.ndjson", args.store_events)
                say(f"  {store_pool.seconds:.0f} s")
                for name, on_cluster in stores:
                    say(f"{name}{'' if on_cluster else ' and B6'}")
                    attempt(
                        name,
                        figures,
                        notes,
                        lambda c=on_cluster: run_queries(
                            client, store_pool, args.runs, args.b3_seconds, say, cluster=c
                        ),
                    )
    if "yardsticks" in chosen:
        say(f"yardsticks: {args.runs} runs each over the same {pool.events:,} events")
        figures.extend(yardsticks(pool, args.runs))
    figures.extend(ratios(figures))
    return figures, notes


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    load = os.getloadavg()[0]
    if load > BUSY_LOAD:
        say(f"warning: load average is {load:.2f}; other work on this machine skews the figures")
    with tempfile.TemporaryDirectory(prefix="hypemeter-bench-pool-") as tmp:
        say(f"generating the workload: {args.events:,} events ...")
        pool = generate_pool(Path(tmp) / "workload.ndjson", args.events)
        say(f"  {pool.size_bytes / pool.events:.0f} bytes/event, {pool.seconds:.1f} s")
        figures, notes = run(args, pool)
    notes["total_s"] = round(time.perf_counter() - started, 1)
    notes["load_average_before"] = round(load, 2)
    print(json_lines(figures))
    print()
    print(table(figures))
    path = save(figures, notes)
    say(f"written to {path} in {notes['total_s']} s")


if __name__ == "__main__":
    main()
