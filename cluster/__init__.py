"""The cluster wing: Ray shards and recorders, the Redis topic bus, presence
leases, the gateway registry, rate counters, and the operator commands
(status, rebalance)."""
