"""Recorders as Ray actors (cluster mode): a call recorded by `recorder-0`,
a Ray actor reserving one CPU, through the shards and the gateway."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.conftest import Harness
from tests.test_media import media_seconds, video_session

pytestmark = pytest.mark.cluster


async def test_a_call_recorded_by_a_recorder_actor(
    make_cluster_server: Callable[..., Awaitable[Harness]], tmp_path: Path
) -> None:
    import ray

    h = await make_cluster_server(recording="required")
    customer, notary, sid, c, n = await video_session(h)
    try:
        await customer.expect("recording.started", timeout=30)
        await notary.call(
            "checks.record",
            {"session_id": sid, "comprehension_confirmed": True, "duress_check_passed": True},
        )
        await customer.call("act.sign", {"session_id": sid, "signature": "c2ln"})
        await notary.call("act.seal", {"session_id": sid, "signature": "ZQ==", "seal": "cw=="})
        await asyncio.sleep(3)
        await notary.call("video.end", {"session_id": sid})
    finally:
        await c.close()
        await n.close()
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
    handle = ray.get_actor("recorder-0", namespace=h.settings.ray_namespace)
    info = await handle.ready.remote()
    assert info["recorder"] == 0
    used = ray.cluster_resources()["CPU"] - ray.available_resources().get("CPU", 0.0)
    assert used >= 1.0
