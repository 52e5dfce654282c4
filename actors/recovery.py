"""After a start (or a crash), pick up what must go on without a client: the
Matchmaker's queue, the presence of notaries still connected elsewhere,
request expiry timers, unfinished finalisation and distribution.

One procedure for both hosts: a single node recovers everything; a shard
of the cluster recovers the actors it hosts (`hosts(address)`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from actors import lifecycle as L
from actors.actor import ActorHost
from actors.ports import Presence
from core.ids import MATCHMAKER, notary_address, session_address
from core.messages import Message
from persistence.journal import Journal
from persistence.sessions import session_ids_in

logger = logging.getLogger(__name__)


def _everything(address: str) -> bool:
    return True


async def recover(
    host: ActorHost,
    journal: Journal,
    *,
    presence: Presence | None = None,
    hosts: Callable[[str], bool] = _everything,
) -> int:
    """Wake what must go on; returns how many sessions were told to recover."""
    if hosts(MATCHMAKER):
        await host.ask(MATCHMAKER, Message("presence_list"))
    if presence is not None:
        # Notaries tell the Matchmaker where they stand (it may have lost its list).
        for notary_id in await presence.online_notaries():
            if hosts(MATCHMAKER) or hosts(notary_address(notary_id)):
                host.tell(notary_address(notary_id), Message("announce"))
    sessions = [
        sid
        for sid in await session_ids_in(journal.pool, L.RECOVER_ON_START)
        if hosts(session_address(sid))
    ]
    for sid in sessions:
        host.tell(session_address(sid), Message("recover"))
    if sessions:
        logger.info("recovering %d sessions", len(sessions))
    return len(sessions)
