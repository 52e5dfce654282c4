"""Stand-ins shared by the functional tests: Twilio's REST APIs on loopback
(Video and recordings: tests/functional/test_twilio.py's `TwilioStandIn`;
Messages: tests/functional/test_deliveries.py's `MessagesStandIn`), with the
credentials the server reads from the environment set for the test; and a
started journal on a scratch database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from persistence.journal import Journal
from persistence.migrate import apply_migrations
from persistence.pool import create_pool
from tests.functional.test_deliveries import TW_SID, TW_TOKEN, MessagesStandIn
from tests.functional.test_twilio import API_KEY, API_SECRET, SID, TOKEN, TwilioStandIn


@pytest.fixture
async def twilio_api(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TwilioStandIn]:
    """Twilio's Video REST API (rooms, recordings, media) on loopback."""
    stand_in = TwilioStandIn()
    await stand_in.server.start_server()
    for name, value in (
        ("TWILIO_ACCOUNT_SID", SID),
        ("TWILIO_AUTH_TOKEN", TOKEN),
        ("TWILIO_API_KEY", API_KEY),
        ("TWILIO_API_SECRET", API_SECRET),
    ):
        monkeypatch.setenv(name, value)
    yield stand_in
    await stand_in.server.close()


@pytest.fixture
async def messages_api(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MessagesStandIn]:
    """Twilio's Messages API (SMS) on loopback."""
    stand_in = MessagesStandIn()
    await stand_in.server.start_server()
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", TW_SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TW_TOKEN)
    monkeypatch.setenv("TWILIO_FROM_NUMBER", "+15005550006")
    yield stand_in
    await stand_in.server.close()


@pytest.fixture
async def journal(database: str) -> AsyncIterator[Journal]:
    """A started journal on a migrated scratch database."""
    pool = await create_pool(database)
    async with pool.acquire() as conn:
        await apply_migrations(conn)
    j = Journal(pool)
    await j.start()
    yield j
    await j.stop()
    await pool.close()
