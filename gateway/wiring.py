"""Pieces both compositions share (gateway.single_node, gateway.cluster_node):
the database and keys, the delivery worker with its senders, the public
base URL, and closing the pool within a bound."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from actors.actor import Messenger
from config.settings import Settings
from delivery.senders import SmsSender, WebhookSender
from delivery.worker import DeliveryWorker, Sender
from persistence import shardmap
from persistence.keys import KeyFileError, Keys
from persistence.migrate import apply_migrations
from persistence.pool import create_pool

logger = logging.getLogger(__name__)


async def open_database(
    settings: Settings, dsn: str, *, migrate: bool, cluster: bool = False
) -> tuple[Keys, asyncpg.Pool]:
    """The keys (sealing, signing) and the pool, migrated when asked.

    In a cluster, keys are generated only by the very first process (none
    recorded yet); every later one must load the same keys (their ids are
    recorded in the database) or refuse to start (KeyFileError)."""
    pool = await create_pool(dsn, max_size=settings.db_pool_size)
    try:
        if migrate:
            async with pool.acquire() as conn:
                await apply_migrations(conn)
        generate = not cluster or not await shardmap.recorded_key_ids(pool)
        # Key files are read (and at a first start written): off the event loop.
        keys = await asyncio.to_thread(
            Keys.load, settings.signing_key_file, settings.pii_key_file, settings.data_dir, generate
        )
        if cluster:
            mismatch = shardmap.key_mismatch(
                keys.ids(), await shardmap.agree_on_keys(pool, keys.ids())
            )
            if mismatch is not None:
                raise KeyFileError(mismatch)
    except BaseException:
        await pool.close()
        raise
    return keys, pool


def public_base(settings: Settings) -> str:
    """The URL clients reach this server at (links, callbacks, the registry)."""
    return settings.public_url or f"http://{settings.host}:{settings.port}"


def make_delivery_worker(
    settings: Settings, pool: asyncpg.Pool, keys: Keys, host: Messenger
) -> DeliveryWorker:
    senders: dict[str, Sender | None] = {"webhook": None, "sms": None}
    why = {
        "webhook": "ENF_WEBHOOK_URL is not set: the event waits in the outbox",
        "sms": SmsSender.missing() or "",
    }
    if settings.webhook_url:
        if not settings.webhook_secret:
            raise ValueError("ENF_WEBHOOK_URL needs ENF_WEBHOOK_SECRET (the HMAC key)")
        senders["webhook"] = WebhookSender(
            settings.webhook_url, settings.webhook_secret, keys.pii, settings.delivery_timeout_s
        )
    if not why["sms"]:
        senders["sms"] = SmsSender(keys.pii, settings.twilio_api_base)
    return DeliveryWorker(
        pool,
        senders,
        host.tell,
        max_attempts=settings.delivery_max_attempts,
        base_s=settings.delivery_base_s,
        cap_s=settings.delivery_cap_s,
        why_missing=why,
        breaker=(settings.breaker_threshold, settings.breaker_cooldown_s),
    )


async def close_pool(pool: asyncpg.Pool) -> None:
    """Close gracefully if the connections come back in time, else cut them."""
    try:
        await asyncio.wait_for(pool.close(), 5)
    except TimeoutError:
        logger.warning("database connections still in use at exit: closing them")
        pool.terminate()
