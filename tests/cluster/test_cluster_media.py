"""Recorders as Ray actors (cluster mode): a call recorded by `recorder-0`,
a Ray actor reserving one CPU, through the shards and the gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlparse

import pytest
import ray

from tests.conftest import MakeServer
from tests.flows import sign_and_seal
from tests.media_peers import media_seconds, parties_closed, record_then_end, video_session

pytestmark = pytest.mark.cluster


def cpus() -> tuple[float, float]:
    """The cluster's CPUs, and those not reserved."""
    # Ray leaves these two untyped.
    total = ray.cluster_resources()["CPU"]  # type: ignore[no-untyped-call]
    return total, ray.available_resources().get("CPU", 0.0)  # type: ignore[no-untyped-call]


async def test_a_call_recorded_by_a_recorder_actor(
    make_cluster_server: MakeServer, tmp_path: Path
) -> None:
    h = await make_cluster_server(recording="required")
    customer, notary, sid, c, n = await video_session(h)
    async with parties_closed(c, n):
        await record_then_end(
            customer,
            notary,
            sid,
            3,
            timeout=30,
            meanwhile=lambda: sign_and_seal(customer, notary, sid),
        )
    ready = (await customer.expect("recording.ready", timeout=60))["data"]
    assert {t["user_id"] for t in ready["tracks"]} == {"c1", "n1"}
    for t in ready["tracks"]:
        path = Path(urlparse(t["url"]).path)
        # Written by the recorder actor's worker under its own directory.
        size = (await asyncio.to_thread(path.stat)).st_size
        assert path.is_relative_to(tmp_path) and size == t["bytes"]
        assert 1.0 < media_seconds(path) < 10.0
    await notary.call("session.notarize", {"session_id": sid})
    await customer.expect("session.notarized")

    # The recorder is a Ray actor of this cluster, reserving one CPU (the
    # shards reserve none, so the CPUs in use are the recorders').
    handle = await asyncio.to_thread(ray.get_actor, "recorder-0", h.settings.ray_namespace)
    info = await handle.ready.remote()
    assert info["recorder"] == 0
    total, available = await asyncio.to_thread(cpus)
    used = total - available
    assert used >= 1.0
