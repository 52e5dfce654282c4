-- The ids of the keys every process of a cluster must hold (ENF_CLUSTER=ray):
-- the first process to start records them; any process whose keys differ
-- refuses to start (a shard on a node without the key files would otherwise
-- seal personal data and sign envelopes with keys no other node has).
CREATE TABLE cluster_keys (
    name       text PRIMARY KEY,  -- 'signing', 'pii'
    key_id     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
