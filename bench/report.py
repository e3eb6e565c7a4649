"""Figures and how they are printed: one JSON line each, a short table, latest.json."""

from __future__ import annotations

import json
import math
import operator
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stats import median

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
_COMPARE: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True, slots=True)
class Figure:
    """One reported number: the median of its runs, with the PERF.md target if it has one.

    ``target`` reads like ``">= 200000"``; ``client`` names the load client where it matters.
    """

    bench: str
    metric: str
    value: float
    runs: list[float]
    target: str | None = None
    client: str | None = None

    @classmethod
    def of_runs(
        cls,
        bench: str,
        metric: str,
        runs: Sequence[float],
        target: str | None = None,
        client: str | None = None,
    ) -> Figure:
        return cls(bench, metric, median(runs), list(runs), target, client)

    def met(self) -> bool | None:
        """Whether the value meets the target; None without a target."""
        if self.target is None or math.isnan(self.value):
            return None
        sign, bound = self.target.split()
        return _COMPARE[sign](self.value, float(bound))

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "bench": self.bench,
            "metric": self.metric,
            "value": _rounded(self.value),
            "runs": [_rounded(v) for v in self.runs],
            "target": self.target,
        }
        if self.client is not None:
            out["client"] = self.client
        return out


def _rounded(value: float) -> float | None:
    if math.isnan(value):
        return None
    return round(value, 4 if abs(value) < 10 else 1)


def _shown(value: float) -> str:
    if math.isnan(value):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def json_lines(figures: Sequence[Figure]) -> str:
    return "\n".join(json.dumps(f.as_json(), separators=(",", ":")) for f in figures)


def table(figures: Sequence[Figure]) -> str:
    rows = [("bench", "metric", "median", "runs", "target", "")]
    for f in figures:
        verdict = {True: "ok", False: "MISSED", None: ""}[f.met()]
        runs = " ".join(_shown(v) for v in f.runs)
        rows.append((f.bench, f.metric, _shown(f.value), runs, f.target or "", verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def save(figures: Sequence[Figure], notes: dict[str, Any], path: Path = RESULTS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "python": platform.python_version(),
            "cpus": len(os.sched_getaffinity(0)),
        },
        "figures": [f.as_json() for f in figures],
        "notes": notes,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
