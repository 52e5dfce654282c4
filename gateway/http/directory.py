"""The directory: notary profiles (admins) and customers' favorite notaries."""

from __future__ import annotations

import logging
from datetime import date
from typing import Annotated

from aiohttp import web
from pydantic import Field, StringConstraints, field_validator

from core.errors import ProtocolError
from core.ids import notary_address
from core.messages import Message
from gateway.http.access import identify, services_of
from gateway.http.inputs import json_body, user_id, validate
from gateway.requests import LatLng, Model, Text
from persistence import directory
from persistence.keys import mask

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()


class NotaryProfile(Model):
    name: Text | None = None
    license_number: Text | None = None
    commission_expires: Text | None = None
    rating: Annotated[float, Field(ge=0, le=5)] | None = None
    tariff: Annotated[float, Field(ge=0)] | None = None
    specializations: Annotated[list[Text], Field(max_length=100)] = []
    location: LatLng | None = None
    avg_response_time_s: Annotated[float, Field(ge=0)] | None = None
    # Opt-in: offers made while the notary is not connected go out by SMS.
    notify_sms: Annotated[str, StringConstraints(pattern=r"^\+[1-9]\d{7,14}$")] | None = None

    @field_validator("commission_expires")
    @classmethod
    def _date(cls, v: str | None) -> str | None:
        if v is not None:
            date.fromisoformat(v[:10])
        return v


class Favorites(Model):
    notary_ids: Annotated[list[Text], Field(max_length=500)]


@routes.put("/v1/notaries/{id}")
async def put_notary(request: web.Request) -> web.Response:
    identify(request, "admin")
    notary_id = user_id(request)
    profile = validate(NotaryProfile, await json_body(request)).model_dump(exclude_none=True)
    services = services_of(request)
    shown = dict(profile)
    if "notify_sms" in profile:  # a phone number: sealed at rest
        shown["notify_sms"] = mask(profile["notify_sms"])
        profile["notify_sms"] = services.keys.pii.seal(
            profile["notify_sms"], notary_address(notary_id)
        )
    await directory.put_notary_profile(services.pool, notary_id, profile)
    services.host.tell(notary_address(notary_id), Message("profile_updated"))
    logger.info("notary profile %s updated", notary_id)
    return web.json_response({"notary_id": notary_id, "profile": shown})


@routes.put("/v1/customers/{id}/favorites")
async def put_favorites(request: web.Request) -> web.Response:
    ident = identify(request, "admin", "customer")
    customer_id = user_id(request)
    if ident.role == "customer" and ident.user_id != customer_id:
        raise ProtocolError("forbidden", "you may only change your own favorites")
    body = validate(Favorites, await json_body(request))
    ids = list(dict.fromkeys(body.notary_ids))
    await directory.put_favorites(services_of(request).pool, customer_id, ids)
    return web.json_response({"customer_id": customer_id, "notary_ids": ids})
