"""The adapter registry, and the webhook layer's promise to do no I/O."""

from __future__ import annotations

import subprocess
import sys

from hypemeter.connectors.webhooks import ADAPTERS
from hypemeter.connectors.webhooks.payload import id_of, int_of, unix_us
from hypemeter.events.model import PLATFORMS

IO_MODULES = ("asyncio", "socket", "httpx", "fastapi", "starlette", "duckdb", "pyarrow")


def test_every_platform_with_webhooks_has_its_adapter() -> None:
    assert set(ADAPTERS) == {
        "instagram",
        "facebook",
        "youtube",
        "tiktok",
        "x",
        "linkedin",
        "twitch",
    }
    assert set(ADAPTERS) <= set(PLATFORMS)
    for name, adapter in ADAPTERS.items():
        assert adapter.platform == name
        assert adapter.secret_names
    assert ADAPTERS["instagram"].secret_names == ("app_secret", "verify_token")


def test_importing_the_webhook_layer_loads_no_io_library() -> None:
    probe = (
        "import sys, hypemeter.connectors.webhooks; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {IO_MODULES!r}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"


def test_ids_and_times_are_read_leniently() -> None:
    assert id_of({"a": 12}, "a") == "12"
    assert id_of({"a": True}, "a") is None
    assert id_of({"a": ""}, "a") is None
    assert int_of({"a": "1795183100000"}, "a") == 1_795_183_100_000
    assert int_of({"a": "-1"}, "a") is None
    assert unix_us(1_763_800_000) == 1_763_800_000_000_000
    assert unix_us(1_763_800_000_123) == 1_763_800_000_123_000
