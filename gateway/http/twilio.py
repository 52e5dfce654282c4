"""Twilio Video's status callbacks (rooms, recordings), checked against
their X-Twilio-Signature."""

from __future__ import annotations

import logging

from aiohttp import web

from core.errors import ProtocolError
from gateway.http.access import services_of
from gateway.http.errors import too_many

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()


@routes.post("/webhooks/twilio/status")
async def twilio_status(request: web.Request) -> web.Response:
    """Room and recording status callbacks, signed by Twilio."""
    services = services_of(request)
    video = services.video
    if video is None:
        raise ProtocolError("not_found", "ENF_VIDEO_PROVIDER is not twilio")
    form = await request.post()
    params = {k: str(v) for k, v in form.items()}
    base = services.settings.public_url
    url = (base.rstrip("/") + request.path_qs) if base else str(request.url)
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature or not video.valid(url, params, signature):
        logger.warning("twilio callback refused: bad signature (%s)", params.get("CallbackSid"))
        wait = services.limits.anonymous(request.remote)  # a failed authentication
        if wait:
            return too_many("too many failed authentications from this address", wait)
        raise ProtocolError("forbidden", "bad X-Twilio-Signature")
    logger.info("twilio %s for room %s", params.get("StatusCallbackEvent"), params.get("RoomName"))
    video.on_callback(params)
    return web.Response(status=204)
