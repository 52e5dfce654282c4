"""The matching score of shared/MATCHING.md. Pure functions, no I/O."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

EARTH_RADIUS_KM = 6371.0088
EMA_WEIGHT = 0.2


def clamp01(x: float) -> float:
    return 0.0 if x < 0 else 1.0 if x > 1 else x


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lng1, lat2, lng2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lng2 - lng1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


@dataclass(slots=True)
class Criteria:
    """What the customer asked for (from `session.request` or `notaries.available`)."""

    document_type: str | None = None
    price_preference: float | None = None
    location: tuple[float, float] | None = None
    favorites: frozenset[str] = field(default_factory=frozenset)


@dataclass(slots=True)
class Candidate:
    notary_id: str
    rating: float = 0.0
    avg_response_time_s: float = 0.0
    tariff: float = 0.0
    specializations: frozenset[str] = field(default_factory=frozenset)
    location: tuple[float, float] | None = None
    available: bool = True


def score(c: Candidate, q: Criteria) -> float:
    rating = clamp01(c.rating / 5)
    availability = 1.0 if c.available else 0.0
    response = max(0.0, 1 - c.avg_response_time_s / 300)
    if q.price_preference is None:
        price = 1.0
    elif c.tariff > 0:
        price = clamp01(1 - abs(q.price_preference - c.tariff) / c.tariff)
    else:
        price = 1.0 if q.price_preference == 0 else 0.0
    special = 1.0 if q.document_type is not None and q.document_type in c.specializations else 0.0
    if q.location is None:
        distance = 1.0
    elif c.location is None:
        distance = 0.0
    else:
        distance = clamp01(1 - haversine_km(q.location, c.location) / 100)
    favorite = 1.0 if c.notary_id in q.favorites else 0.0
    return (
        0.25 * rating
        + 0.20 * availability
        + 0.15 * clamp01(response)
        + 0.10 * price
        + 0.10 * special
        + 0.05 * distance
        + 0.15 * favorite
    )


def rank(candidates: list[tuple[Candidate, float]], q: Criteria) -> list[tuple[Candidate, float]]:
    """Best first: score desc, then longest available (oldest `available_since`
    first), then notary id. Input pairs are (candidate, available_since)."""
    scored = [(score(c, q), since, c) for c, since in candidates]
    scored.sort(key=lambda t: (-t[0], t[1], t[2].notary_id))
    return [(c, s) for s, _, c in scored]


def best(candidates: Iterable[tuple[Candidate, float]], q: Criteria) -> Candidate | None:
    """`rank(candidates, q)[0]` without sorting them all (one pass); None if none."""
    top: Candidate | None = None
    top_key: tuple[float, float, str] | None = None
    for c, since in candidates:
        key = (-score(c, q), since, c.notary_id)
        if top_key is None or key < top_key:
            top, top_key = c, key
    return top


def update_ema(previous: float, seconds: float) -> float:
    return (1 - EMA_WEIGHT) * previous + EMA_WEIGHT * seconds


def candidate_from_profile(
    notary_id: str, profile: dict[str, Any], live_avg: float | None
) -> Candidate:
    loc = profile.get("location") or None
    return Candidate(
        notary_id=notary_id,
        rating=float(profile.get("rating") or 0.0),
        avg_response_time_s=float(
            live_avg if live_avg is not None else profile.get("avg_response_time_s") or 0.0
        ),
        tariff=float(profile.get("tariff") or 0.0),
        specializations=frozenset(profile.get("specializations") or ()),
        location=(float(loc["lat"]), float(loc["lng"])) if loc else None,
    )
