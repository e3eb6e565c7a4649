"""``hypemeter demo`` as a user runs it: ``python -m hypemeter demo`` in a subprocess.

The first run on a new data directory creates the demo tenant and its keys, seeds a
week of history through the public API, prints the dashboard link with the read key,
then simulates live traffic until SIGINT. A second run on the same data directory
reuses the keys and does not seed again. Small ``--history`` and ``--rate`` keep it
quick; every wait has a generous timeout, so a demo that never gets ready fails the
test instead of hanging it. The demo always runs embedded (no shared engines).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from .support import HYPEMETER, bearer, cli_env, free_port, utc_now

HISTORY, RATE = 20_000, 5
SEEDED = HISTORY + min(RATE * 3600, HISTORY)  # the week, then the last hour
READY_TIMEOUT = 120.0
EXIT_TIMEOUT = 30.0
LINK = re.compile(r"^\s*http://127\.0\.0\.1:(?P<port>\d+)/#key=(?P<key>\S+)$", re.MULTILINE)
KEY_SECRET = r"hm_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}"
DAY_US = 86_400_000_000


@dataclass
class Demo:
    """One ``hypemeter demo`` subprocess; its stdout and stderr read line by line."""

    data: Path
    port: int = field(default_factory=free_port)
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.proc = subprocess.Popen(
            [
                *HYPEMETER,
                "demo",
                "--port",
                str(self.port),
                "--data",
                str(self.data),
                "--history",
                str(HISTORY),
                "--rate",
                str(RATE),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=cli_env(),
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:  # closed once the demo exited
            for line in self.proc.stdout:
                self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_link(self) -> re.Match[str]:
        deadline = time.monotonic() + READY_TIMEOUT
        while (found := LINK.search(self.output)) is None:
            if self.proc.poll() is not None:
                self._reader.join(timeout=5)
                raise AssertionError(f"demo exited {self.proc.returncode}:\n{self.output}")
            assert time.monotonic() < deadline, f"no dashboard link:\n{self.output}"
            time.sleep(0.1)
        # The keys follow the link; the block ends with the "Simulating" line.
        while "Ctrl-C stops everything" not in self.output:
            assert time.monotonic() < deadline, f"incomplete banner:\n{self.output}"
            time.sleep(0.05)
        return found

    def printed_key(self, role: str) -> str:
        found = re.search(rf"^\s*{role} key:\s+({KEY_SECRET})$", self.output, re.MULTILINE)
        assert found, self.output
        return found.group(1)

    def interrupt(self) -> int:
        """SIGINT, as Ctrl-C sends it; the exit status."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=EXIT_TIMEOUT)
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=EXIT_TIMEOUT)
        self._reader.join(timeout=5)

    def get(self, key: str, path: str, **params: Any) -> dict[str, Any]:
        response = httpx.get(self.url + path, params=params, headers=bearer(key), timeout=30)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
def demos() -> Iterator[list[Demo]]:
    """Demos a test starts; any still running at teardown is killed."""
    started: list[Demo] = []
    yield started
    for demo in started:
        demo.kill()


def day_start() -> dt.datetime:
    return dt.datetime.combine(utc_now().date(), dt.time(), tzinfo=dt.UTC)


def stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def past_days(demo: Demo, key: str, today: dt.datetime) -> list[dict[str, Any]]:
    """The six whole days before ``today``: history only (live traffic is of now)."""
    answer = demo.get(
        key,
        "/v1/metrics/series",
        start=stamp(today - dt.timedelta(days=6)),
        end=stamp(today),
        granularity="day",
        metrics="likes,comments,shares,views",
    )
    series: list[dict[str, Any]] = answer["series"]
    assert len(series) == 6
    return series


def ingest_total(demo: Demo, key: str) -> int:
    return int(demo.get(key, "/v1/ingestion/health")["totals"]["accepted"])


def test_demo_seeds_a_week_once_and_reuses_its_keys(tmp_path: Path, demos: list[Demo]) -> None:
    data = tmp_path / "demo"
    launched_us = time.time_ns() // 1000
    first = Demo(data)
    demos.append(first)
    link = first.wait_link()
    linked_us = time.time_ns() // 1000

    # The banner: the link on this port with the read key, and the three keys.
    assert int(link["port"]) == first.port
    keys = {role: first.printed_key(role) for role in ("read", "ingest", "admin")}
    assert link["key"] == keys["read"]
    assert len(set(keys.values())) == 3
    assert "seeding 7 days of history" in first.output
    saved = data / "demo-keys.json"
    assert json.loads(saved.read_text()) == keys
    assert saved.stat().st_mode & 0o777 == 0o600

    # The seeding mark: done, with what the server accepted of the seeded events.
    mark = data / "demo-seeded.json"
    seeded = json.loads(mark.read_text())
    assert set(seeded) == {"origin_us", "done", "accepted"}
    assert seeded["done"] is True
    assert launched_us - 7 * DAY_US <= seeded["origin_us"] <= linked_us - 7 * DAY_US
    # The workload repeats a few event ids on purpose: those count once.
    assert 0.9 * SEEDED <= seeded["accepted"] <= SEEDED

    # Through the API with the printed read key: a week of data over every day.
    read = keys["read"]
    week = first.get(read, "/v1/metrics/series", period="7d", granularity="day", metrics="likes")
    assert week["granularity"] == "day"
    assert len(week["series"]) == 7
    busy_days = [row["ts"] for row in week["series"] if row["likes"] > 0]
    assert len(busy_days) >= 6, week["series"]
    assert week["totals"]["likes"] == sum(row["likes"] for row in week["series"])
    hour = first.get(read, "/v1/metrics/series", period="1h", granularity="minute", metrics="likes")
    assert sum(1 for row in hour["series"] if row["likes"] > 0) >= 50, hour["series"]
    board = first.get(read, "/v1/leaderboard", metric="engagement", period="7d")
    assert len(board["data"]) >= 10
    assert [row["rank"] for row in board["data"]] == list(range(1, len(board["data"]) + 1))
    assert all(row["influencer_id"] for row in board["data"])
    # The seeding went through this process's public ingest, all of it within the hour.
    health = first.get(read, "/v1/ingestion/health")
    totals = health["totals"]
    assert totals["accepted"] >= seeded["accepted"]
    assert totals["accepted"] + totals["duplicates"] + totals["rejected"] >= SEEDED
    # The dashboard the link opens.
    page = httpx.get(first.url + "/", timeout=30)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")

    # Live traffic goes on after the seeding (today's events only).
    accepted = ingest_total(first, read)
    deadline = time.monotonic() + 60
    while ingest_total(first, read) <= accepted:
        assert time.monotonic() < deadline, "no live traffic"
        time.sleep(0.2)
    today = day_start()
    history = past_days(first, read, today)
    assert all(row["likes"] > 0 for row in history), history

    assert first.interrupt() == 0, first.output
    assert "Traceback" not in first.output, first.output
    mark_text = mark.read_text()

    # Second run: the same keys, no seeding, the same history.
    second = Demo(data)
    demos.append(second)
    again = second.wait_link()
    assert int(again["port"]) == second.port
    assert again["key"] == keys["read"]
    assert {role: second.printed_key(role) for role in keys} == keys
    assert "seeding" not in second.output.lower()
    assert mark.read_text() == mark_text
    assert json.loads(saved.read_text()) == keys
    assert past_days(second, read, today) == history
    # This process ingested live traffic only, nothing like the seeded week.
    health = second.get(read, "/v1/ingestion/health")["totals"]
    assert health["accepted"] + health["duplicates"] + health["rejected"] < HISTORY
    assert second.interrupt() == 0, second.output
    assert "Traceback" not in second.output, second.output
