"""`cluster status`'s shard states (cluster.ops.shard_state), from what a
shard answers and where the shard map places it."""

from __future__ import annotations

from cluster.ops import shard_state
from persistence.shardmap import ShardMap

MAP = ShardMap(count=2, epoch=3, nodes=("node-a", None))


def test_each_state_from_what_the_shard_answers() -> None:
    running = {"shard": 0, "node_id": "node-a", "fenced": False}
    assert shard_state(running, MAP) == "RUNNING"
    assert shard_state({**running, "node_id": "node-b"}, MAP) == "MISPLACED"
    assert shard_state({**running, "shard": 1, "node_id": "node-b"}, MAP) == "RUNNING"
    assert shard_state({**running, "fenced": True}, MAP) == "FENCED"
    assert shard_state({"shard": 0, "error": "ActorDiedError: gone"}, MAP) == "RESTARTING"
    assert shard_state({"shard": 0, "error": "missing: no actor", "missing": True}, MAP) == (
        "MISSING"
    )
