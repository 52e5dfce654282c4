"""The topic bus: events from actors to the connections that follow a topic.

`LocalBus` is the in-process implementation (single node). A Redis-backed one
(cluster mode) implements the same two methods.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Protocol

from core.messages import Delivery

logger = logging.getLogger(__name__)


class Subscriber(Protocol):
    def deliver(self, d: Delivery) -> None:
        """Called on the event loop; must not block or raise."""


class TopicBus(Protocol):
    def publish(self, d: Delivery) -> None: ...
    def subscribe(self, topic: str, sub: Subscriber) -> None: ...
    def unsubscribe(self, topic: str, sub: Subscriber) -> None: ...
    async def subscribed(self, topic: str, timeout: float = 2.0) -> bool:
        """Wait until events published from now on reach this subscription."""
        ...


class LocalBus:
    def __init__(self) -> None:
        self._subs: defaultdict[str, set[Subscriber]] = defaultdict(set)

    def publish(self, d: Delivery) -> None:
        for sub in tuple(self._subs.get(d.topic, ())):
            try:
                sub.deliver(d)
            except Exception:
                logger.exception("subscriber failed on %s", d.topic)

    def subscribe(self, topic: str, sub: Subscriber) -> None:
        self._subs[topic].add(sub)

    def unsubscribe(self, topic: str, sub: Subscriber) -> None:
        subs = self._subs.get(topic)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[topic]

    async def subscribed(self, topic: str, timeout: float = 2.0) -> bool:
        return True  # in process: at once

    def topic_count(self) -> int:
        return len(self._subs)
