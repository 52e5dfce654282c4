"""The actor classes by kind (the first part of an address): what a host
activates for `session:…`, `notary:…` and `matchmaker`."""

from __future__ import annotations

from actors.actor import Actor
from actors.matchmaker import Matchmaker
from actors.notary import NotaryActor
from actors.session import SessionActor
from core.ids import MATCHMAKER, NOTARY, SESSION

ACTOR_KINDS: dict[str, type[Actor]] = {
    SESSION: SessionActor,
    NOTARY: NotaryActor,
    MATCHMAKER: Matchmaker,
}
