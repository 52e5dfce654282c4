-- The cluster's shard map (ENF_CLUSTER=ray): how many shards, where each one
-- runs, and the epoch that fences a stale incarnation of a shard.
CREATE TABLE cluster_shards (
    shard       int PRIMARY KEY,
    -- Bumped by every incarnation that claims the shard; journal writes of a
    -- shard carry the epoch they claimed and fail once it has moved on.
    epoch       bigint NOT NULL DEFAULT 0,
    -- The Ray node the shard should run on (NULL: anywhere).
    node_id     text,
    -- Who claimed it last: "<host>:<pid>" of the shard process.
    owner       text,
    claimed_at  timestamptz
);

-- One row: the shard count (fixed once the map exists: an actor's shard is
-- shard_of(actor_id, count)) and the map's epoch (bumped by every change of
-- placement, so gateways know to re-read it).
CREATE TABLE cluster_map (
    id          int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    shard_count int NOT NULL CHECK (shard_count > 0),
    epoch       bigint NOT NULL DEFAULT 1,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
