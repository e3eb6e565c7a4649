"""In-process live bus: the embedded default (``memory://``)."""

from __future__ import annotations

from hypemeter.backends.subscription import BufferedSubscription


class MemoryLiveBus:
    """Delivery is a non-blocking append to each subscriber's bounded buffer."""

    def __init__(self) -> None:
        self._topics: dict[str, set[BufferedSubscription]] = {}

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        for subs in list(self._topics.values()):
            for sub in list(subs):
                await sub.aclose()
        self._topics.clear()

    async def publish(self, topic: str, message: bytes) -> None:
        for sub in self._topics.get(topic, ()):
            sub.deliver(message)

    async def check(self) -> None:
        return None

    def interested(self, topic: str) -> bool:
        return topic in self._topics

    def subscribe(self, topic: str, *, max_pending: int = 1000) -> BufferedSubscription:
        sub = BufferedSubscription(topic, max_pending, self.forget)
        self._topics.setdefault(topic, set()).add(sub)
        return sub

    def forget(self, sub: BufferedSubscription) -> None:
        subs = self._topics.get(sub.topic)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._topics[sub.topic]
