"""The prose of the AsyncAPI document (gateway.http.asyncapi): what each
request does (PROTOCOL §4), the subprotocols and close codes (§3, §8)."""

from __future__ import annotations

from typing import Any

from gateway import protocol as P

INFO: dict[str, Any] = {
    "title": "ENF session server: WebSocket",
    "version": "1",
    "description": (
        "The realtime half of the wire contract (PROTOCOL.md §3-5, §8). A client sends"
        " requests `{id, type, data}`; every request gets exactly one reply `{re, ok,"
        " data}` or `{re, ok: false, error: {code, message}}`, sent before the events it"
        " caused. The server sends events `{type: event, topic, seq, name, data, at}`:"
        " `seq` counts from 1 per topic with no gaps and is the resume cursor"
        " (`session.join` / `presence.online` with `since_seq`); `signal`,"
        " `notary.presence`, `video.config` and `notification` are ephemeral (no `seq`)."
        " Objects are open: a client ignores keys it does not know. The HTTP API:"
        " /openapi.json."
    ),
}

CHANNEL: dict[str, Any] = {
    "title": "The WebSocket",
    "description": (
        "`GET /v1/ws`, with the token in `Authorization: Bearer …` or, for browsers, in"
        " a first `hello` frame within 5 s. The subprotocol (`Sec-WebSocket-Protocol`)"
        " chooses the codec: `enf.v1.json` (text frames, the default: also when absent"
        " or unknown) or `enf.v1.msgpack` (binary frames, the same structure); the"
        " server echoes the one it chose. Frames over 65,536 bytes close the socket"
        " (1009). The server pings every `heartbeat_s` (WebSocket pings)."
    ),
}

SUBPROTOCOLS: dict[str, Any] = {
    P.SUBPROTOCOL_JSON: {
        "contentType": "application/json",
        "frames": "text",
        "description": "JSON text frames (UTF-8); the default.",
    },
    P.SUBPROTOCOL_MSGPACK: {
        "contentType": "application/msgpack",
        "frames": "binary",
        "description": "MessagePack binary frames: the same maps, strings and numbers.",
    },
}

CLOSE_CODES: dict[str, str] = {
    str(P.CLOSE_GOING_AWAY): "the server is shutting down",
    str(P.CLOSE_TOO_BIG): "a frame over 65,536 bytes",
    str(P.CLOSE_TOO_SLOW): "the client reads too slowly (resume with since_seq)",
    str(P.CLOSE_PROTOCOL): "binary frame on enf.v1.json, or text on enf.v1.msgpack",
    str(P.CLOSE_BAD_TOKEN): "a refused token in hello, or the token expired",
    str(P.CLOSE_NO_HELLO): "no hello within 5 s",
    str(P.CLOSE_FLOOD): "sustained flooding, too many connections or failed authentications",
}

# What each request does (PROTOCOL §4).
ABOUT: dict[str, str] = {
    "presence.online": "A notary goes online: it gets offers, and its missed notary events"
    " after since_seq.",
    "presence.set": "A notary online sets itself available or away.",
    "presence.offline": "A notary goes offline: no more offers.",
    "presence.subscribe": "Every notary's status, then notary.presence events.",
    "notaries.available": "The notaries that could be offered a session now, best first.",
    "session.request": "A customer asks for a notarization; the same idempotency key"
    " returns the same session.",
    "offer.accept": "A notary accepts the offer it holds: the session is assigned to it.",
    "offer.decline": "A notary declines the offer it holds.",
    "session.join": "Join (or watch, for admins) a session: its snapshot, then the missed"
    " events after since_seq.",
    "session.leave": "A participant leaves the session (during the call: it pauses).",
    "signal": "WebRTC signaling, relayed to the other party or answered by the recorder.",
    "video.start": "The notary starts the call (again: the call's settings afresh).",
    "checks.record": "The notary records the comprehension and duress checks.",
    "act.sign": "The principal signs, in full view.",
    "act.seal": "The notary seals, in full view, after the checks and the signature.",
    "video.end": "The notary ends the call; the recording is finalised.",
    "session.notarize": "The notary notarizes: NOTARIZING, then NOTARIZED.",
    "session.distribute": "A participant distributes the notarized document.",
    "session.cancel": "A participant or admin cancels the session (before the seal).",
    "ping": "The server's time.",
}
