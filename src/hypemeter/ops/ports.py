"""The port of the operations view: the event store's gauges that telemetry exports."""

from __future__ import annotations

from typing import Protocol


class StoreGauges(Protocol):
    """Read on every scrape of the Prometheus metrics; cheap, never raising."""

    def queue_depth(self) -> int:
        """Events accepted for writing but not yet committed."""

    def size_bytes(self) -> int:
        """Bytes the store occupies on disk, or 0 when unknown."""
