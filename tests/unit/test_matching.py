"""The matching score (shared/MATCHING.md) by hand: distance, each term,
clamping, and the order of ties."""

from __future__ import annotations

import pytest

from actors.scoring import Candidate, Criteria, haversine_km, rank, score
from tests.flows import CEBU, MANILA


def test_haversine_manila_cebu() -> None:
    km = haversine_km((MANILA["lat"], MANILA["lng"]), (CEBU["lat"], CEBU["lng"]))
    assert 560 < km < 580


def test_score_terms_by_hand() -> None:
    q = Criteria(
        document_type="affidavit",
        price_preference=500.0,
        location=(MANILA["lat"], MANILA["lng"]),
        favorites=frozenset({"a"}),
    )
    a = Candidate(
        "a",
        rating=5,
        avg_response_time_s=0,
        tariff=500,
        specializations=frozenset({"affidavit"}),
        location=(MANILA["lat"], MANILA["lng"]),
    )
    # 0.25 + 0.20 + 0.15 + 0.10 + 0.10 + 0.05 + 0.15
    assert score(a, q) == pytest.approx(1.0)
    b = Candidate(
        "b", rating=2.5, avg_response_time_s=150, tariff=1000, location=(CEBU["lat"], CEBU["lng"])
    )
    # 0.125 + 0.20 + 0.075 + 0.10*0.5 + 0 + 0 (over 100 km) + 0
    assert score(b, q) == pytest.approx(0.45)
    slow = Candidate("c", rating=5, avg_response_time_s=900, tariff=100)
    # Terms are clamped: a slow responder and a far-off price add 0, never less.
    assert score(slow, Criteria(price_preference=1000.0)) == pytest.approx(0.25 + 0.20 + 0.05)
    # No price, no location: those terms are 1; no document type: specialization 0.
    assert score(slow, Criteria()) == pytest.approx(0.25 + 0.20 + 0.10 + 0.05)


def test_ties_break_on_longest_available_then_id() -> None:
    same = [Candidate(n, rating=4) for n in ("z", "y", "x")]
    order = rank([(same[0], 100.0), (same[1], 50.0), (same[2], 100.0)], Criteria())
    assert [c.notary_id for c, _ in order] == ["y", "x", "z"]
