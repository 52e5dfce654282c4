"""The TRUTH envelope: the signed statement of a notarial act, after the
platform design's `generateTruthEnvelope`, plus the recording's SHA-256, the
journal head it attests, the times of the principal's signature and of the
seal (as journaled) and the number of the act's notarial book entry. Signed
with Ed25519 over canonical JSON (`persistence.keys`); stored sealed with the
PII key (it names the principal) in the same transaction as `NOTARIZED`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from core.clock import iso, parse_iso
from core.ids import session_address
from persistence.book import party_countries
from persistence.keys import Keys
from persistence.projections import ENVELOPES, Projection

RULES = "A.M. No. 24-10-14-SC (2024 Rules on Electronic Notarization)"


def envelope_id_for(session_id: str) -> str:
    return f"ENF-{session_id}"


def _duration(state: dict[str, Any]) -> float | None:
    recording = state.get("recording") or {}
    if recording.get("duration_s") is not None:
        return float(recording["duration_s"])
    start, end = state.get("video_started_at"), state.get("video_ended_at")
    if start and end:
        return round((parse_iso(end) - parse_iso(start)).total_seconds(), 3)
    return None


def build_envelope(
    state: dict[str, Any],
    session_id: str,
    *,
    at: str,
    journal_seq: int,
    journal_head: str,
    keys: Keys,
    retention_years: int,
    entry_no: int,
) -> dict[str, Any]:
    """The envelope of the act at `at`: what the session's state holds, the
    journal head it attests and the number of its notarial book entry
    (reserved before signing: `persistence.book.reserve_entry_no`)."""
    request = state.get("request") or {}
    document = state.get("document") or {}
    principal = keys.pii.open_or_none(request.get("principal"), session_id) or {}
    checks = state.get("checks") or {}
    recording = state.get("recording") or {}
    signed = state.get("signed") or {}
    sealed = state.get("sealed") or {}
    countries = party_countries(state)
    retention = parse_iso(at) + timedelta(days=round(365.25 * retention_years))
    return {
        "uid": envelope_id_for(session_id),
        "session_id": session_id,
        "timestamp": at,
        "document_hash": document.get("sha256"),
        "document": {
            "id": document.get("id"),
            "type": document.get("type"),
            "title": document.get("title"),
        },
        "customer": {
            "user_id": state.get("customer_id"),
            "kyc_session_id": request.get("kyc_session_id"),
            "identity_verified": True,
            "face_match_score": request.get("face_match_score"),
            "name": principal.get("name"),
            "id_type": principal.get("id_type"),
            "id_number": principal.get("id_number"),
            "digital_signature": signed.get("signature"),
            "signed_at": signed.get("at"),
        },
        "enp": {
            "user_id": state.get("enp_id"),
            "license_number": state.get("enp_license"),
            "name": state.get("enp_name"),
            "digital_signature": sealed.get("signature"),
            "notarization_seal": sealed.get("seal"),
            "sealed_at": sealed.get("at"),
        },
        "session": {
            "video_recording_url": recording.get("url"),
            "recording_sha256": recording.get("sha256"),
            # Every stored file of the call (each party's, in parts when the
            # recorder was restarted), each with its SHA-256.
            "recording_tracks": [
                {k: t.get(k) for k in ("user_id", "url", "sha256", "bytes")}
                for t in state.get("recording_tracks") or []
            ],
            "duration_seconds": _duration(state),
            "comprehension_confirmed": bool(checks.get("comprehension_confirmed")),
            "duress_check_passed": bool(checks.get("duress_check_passed")),
            "party_countries": countries,
        },
        "journal": {
            "actor_id": session_address(session_id),
            "seq": journal_seq,
            "head_hash": journal_head,
        },
        "compliance": {
            "rules": RULES,
            "mode": "REN",
            "notarial_book": {
                "notary_id": state.get("enp_id"),
                "session_id": session_id,
                "entry_no": entry_no,
            },
            "supreme_court_reported": False,
            "reported_at": None,
            "retention_until": iso(retention),
        },
        "blockchain_anchor": None,
    }


def envelope_row(signed: dict[str, Any], session_id: str, keys: Keys) -> Projection:
    """The row that stores the signed envelope (sealed: it names the
    principal), batched with the commit that issues it."""
    envelope_id = signed["envelope"]["uid"]
    return Projection(
        ENVELOPES,
        (envelope_id, session_id, signed["key_id"], keys.pii.seal(signed, envelope_id)),
    )
