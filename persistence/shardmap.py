"""The cluster's shard map in Postgres: shard count, placement, epochs.

An actor's shard is `shard_of(actor_id, count)`; the count is fixed when the
map is first written (changing it would move every actor). Each shard row
carries the node it should run on and an epoch that every new incarnation of
the shard bumps when it claims the shard: the journal refuses writes that
carry an older epoch (see `Journal.fence`), so a stale incarnation cannot
append after a newer one started.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import asyncpg

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ShardMap:
    count: int
    epoch: int
    nodes: tuple[str | None, ...] = ()
    shard_epochs: tuple[int, ...] = ()
    owners: tuple[str | None, ...] = field(default=())


async def ensure_map(pool: asyncpg.Pool, count: int) -> ShardMap:
    """The map, written with `count` shards if there is none yet."""
    async with pool.acquire() as conn, conn.transaction():
        inserted = await conn.fetchval(
            "INSERT INTO cluster_map (id, shard_count) VALUES (1, $1)"
            " ON CONFLICT (id) DO NOTHING RETURNING shard_count",
            count,
        )
        if inserted is not None:
            await conn.execute(
                "INSERT INTO cluster_shards (shard) SELECT generate_series(0, $1 - 1)"
                " ON CONFLICT DO NOTHING",
                count,
            )
            logger.info("created the cluster's shard map: %d shards", count)
    m = await load_map(pool)
    if m.count != count:
        logger.warning(
            "the shard map has %d shards (ENF_SHARDS=%d is ignored: the count is fixed"
            " once sessions exist)",
            m.count,
            count,
        )
    return m


async def load_map(pool: asyncpg.Pool) -> ShardMap:
    head = await pool.fetchrow("SELECT shard_count, epoch FROM cluster_map WHERE id = 1")
    if head is None:
        raise LookupError("no shard map yet: start a gateway with ENF_CLUSTER=ray first")
    rows = await pool.fetch(
        "SELECT shard, epoch, node_id, owner FROM cluster_shards ORDER BY shard"
    )
    return ShardMap(
        head["shard_count"],
        head["epoch"],
        tuple(r["node_id"] for r in rows),
        tuple(r["epoch"] for r in rows),
        tuple(r["owner"] for r in rows),
    )


async def claim_shard(pool: asyncpg.Pool, shard: int, owner: str) -> int:
    """Bump the shard's epoch for a new incarnation; returns the epoch it owns.
    Waits for batches the previous owner is committing (they hold the row FOR
    SHARE), so no write of the old epoch lands after this returns."""
    epoch: int | None = await pool.fetchval(
        "UPDATE cluster_shards SET epoch = epoch + 1, owner = $2, claimed_at = now()"
        " WHERE shard = $1 RETURNING epoch",
        shard,
        owner,
    )
    if epoch is None:
        raise LookupError(f"shard {shard} is not in the shard map")
    logger.info("shard %d claimed by %s at epoch %d", shard, owner, epoch)
    return epoch


async def place_shard(pool: asyncpg.Pool, shard: int, node_id: str | None) -> int:
    """Record where a shard should run; returns the map's new epoch."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE cluster_shards SET node_id = $2 WHERE shard = $1", shard, node_id
        )
        epoch: int = await conn.fetchval(
            "UPDATE cluster_map SET epoch = epoch + 1, updated_at = now() WHERE id = 1"
            " RETURNING epoch"
        )
    return epoch


async def recorded_key_ids(pool: asyncpg.Pool) -> dict[str, str]:
    """The cluster's key ids, as its first process recorded them (empty: none yet)."""
    rows = await pool.fetch("SELECT name, key_id FROM cluster_keys")
    return {r["name"]: r["key_id"] for r in rows}


async def agree_on_keys(pool: asyncpg.Pool, ids: dict[str, str]) -> dict[str, str]:
    """Record `ids` if the cluster has none yet; return the cluster's. The
    caller refuses to start when they differ from its own."""
    names, values = list(ids), [ids[n] for n in ids]
    await pool.execute(
        "INSERT INTO cluster_keys (name, key_id) SELECT * FROM unnest($1::text[], $2::text[])"
        " ON CONFLICT (name) DO NOTHING",
        names,
        values,
    )
    return await recorded_key_ids(pool)


def key_mismatch(own: dict[str, str], cluster: dict[str, str]) -> str | None:
    """Why a process holding keys `own` must not join a cluster whose keys are
    `cluster` (None: it may)."""
    wrong = [
        f"{n} key {own[n]} (the cluster's is {cluster[n]})" for n in own if cluster.get(n) != own[n]
    ]
    if not wrong:
        return None
    return (
        "this process holds other keys than the cluster: "
        + ", ".join(wrong)
        + "; copy the cluster's key files (ENF_SIGNING_KEY_FILE, ENF_PII_KEY_FILE) to this node"
    )
