"""The audit rows of one WebSocket connection: a row per request (allowed or
refused; `ping` excepted), except that refusals beyond a burst per interval
are counted into one summary row (`gateway.limits.RefusalAudit`), so that a
flood of bad frames cannot crowd legitimate rows out of the audit log.

And the rows of refused tokens (`token_refused`): a header token answered
with HTTP 401 before the upgrade, a `hello` refused with 4401, a token that
expires on an open socket (closed with 4401). They name the address and the
user agent, and why; never the token (nor, before it is verified, the user
it claims to be)."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from core.text import storable
from gateway.auth import Identity
from gateway.limits import RefusalAudit
from gateway.metrics import request_label
from gateway.services import Services
from persistence.audit import AuditRecord, resource_of


class Audited(Protocol):
    """What the audit rows name of a connection (gateway.connection)."""

    id: str
    ident: Identity
    services: Services
    remote: str | None
    user_agent: str | None


class ConnectionAudit:
    """Made by a connection's first audited request or refusal."""

    __slots__ = ("conn", "refusals", "user_agent")

    def __init__(self, conn: Audited) -> None:
        self.conn = conn
        ua = conn.user_agent
        self.user_agent = storable(ua) if ua else ua
        self.refusals: RefusalAudit | None = None  # made by the first refusal

    @property
    def connection_id(self) -> str:
        return self.conn.id

    @property
    def ident(self) -> Identity:
        return self.conn.ident

    @property
    def services(self) -> Services:
        return self.conn.services

    @property
    def remote(self) -> str | None:
        return self.conn.remote

    def refused(self, kind: str, rid: Any, actor: str | None, code: str) -> None:
        """A refused request (or frame); an internal error is always audited."""
        if code == "internal":
            self.request(kind, rid, "error", actor, code)
            return
        refusals = self.refusals
        if refusals is None:
            settings = self.services.settings
            refusals = self.refusals = RefusalAudit(
                settings.audit_refusals_burst, settings.audit_refusals_interval_s
            )
        write, summary = refusals.admit(code)
        if summary is not None:
            self.summary(summary)
        if not write:
            self.services.metrics.audit_refusals_suppressed.inc()
        self.request(kind, rid, "refused", actor, code, write=write)

    def token_expired(self) -> None:
        """The socket was closed with 4401: its token reached `exp`."""
        token_refused(
            self.services,
            self.remote,
            self.user_agent,
            "token.expired",
            "token expired",
            user_id=self.ident.user_id,
        )

    def close(self) -> None:
        """The connection is gone: the summary of what was not audited yet."""
        summary = self.refusals.summary() if self.refusals is not None else None
        if summary is not None:
            self.summary(summary)

    def summary(self, summary: dict[str, Any]) -> None:
        """One row for the refusals not audited one by one."""
        self.services.audit.record(
            AuditRecord(
                event_type="ws.request",
                action="refusals",
                outcome="refused",
                correlation_id=f"{self.connection_id}/refusals",
                user_id=self.ident.user_id,
                ip_address=self.remote,
                user_agent=self.user_agent,
                error_code="suppressed",
                metadata={"role": self.ident.role, **summary},
            )
        )

    def request(
        self,
        kind: str,
        rid: Any,
        outcome: str,
        actor: str | None,
        code: str | None = None,
        *,
        write: bool = True,
    ) -> None:
        resource_type, resource_id = resource_of(actor) if actor else (None, None)
        label = request_label(kind)
        # `unavailable` (a dependency down: nothing applied) is a failure of
        # the server, not a refusal of the client: its own outcome in metrics.
        counted = "unavailable" if code == "unavailable" else outcome
        self.services.metrics.count_request(label, counted)
        if not write:
            return
        # What the client chose (a type, an id, a user agent) is made storable.
        self.services.audit.record(
            AuditRecord(
                event_type="ws.request",
                action=kind if label != "other" else storable(kind),
                outcome=outcome,
                correlation_id=storable(f"{self.connection_id}/{rid}"),
                user_id=self.ident.user_id,
                ip_address=self.remote,
                user_agent=self.user_agent,
                resource_type=resource_type,
                resource_id=storable(resource_id) if resource_id else resource_id,
                error_code=code,
                metadata={"role": self.ident.role},
            )
        )


def token_refused(
    services: Services,
    remote: str | None,
    user_agent: str | None,
    action: str,
    reason: str,
    *,
    user_id: str | None = None,
) -> None:
    """The row of a refused token (`action`: `GET /v1/ws` for the header,
    `hello`, `token.expired`). `reason` is the refusal's message, which says
    what was wrong and never holds the token."""
    services.audit.record(
        AuditRecord(
            event_type="ws.auth",
            action=action,
            outcome="refused",
            correlation_id=uuid.uuid4().hex,
            user_id=user_id,
            ip_address=_text(remote, 64),
            user_agent=_text(user_agent, 512),
            error_code="unauthorized",
            metadata={"reason": storable(reason[:200])},
        )
    )


def _text(value: str | None, limit: int) -> str | None:
    return None if value is None else storable(value[:limit])
