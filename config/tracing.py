"""Optional OpenTelemetry tracing: with OTEL_EXPORTER_OTLP_ENDPOINT set, spans
go out over OTLP/HTTP (gateway request → actor message → journal append and
group commit); without it nothing is imported and `span()` costs a function
call. The standard OTEL_* variables (service name, batch delays, headers)
apply.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)

_tracer: Any = None


def setup_tracing(service_name: str = "enf-session-server") -> bool:
    """Turn tracing on if an OTLP endpoint is configured; idempotent."""
    global _tracer
    if _tracer is not None:
        return True
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        logger.error(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed:"
            " pip install -e '.[otel]'; tracing stays off"
        )
        return False
    name = os.environ.get("OTEL_SERVICE_NAME", service_name)
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("enf")
    logger.info("tracing to %s", os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"])
    return True


def shutdown_tracing() -> None:
    if _tracer is None:
        return
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is not None:
        shutdown()  # flushes what is still queued


def current_context() -> Any:
    """The active trace context, to carry across the mailbox hop (or None)."""
    if _tracer is None:
        return None
    from opentelemetry import context

    return context.get_current()


@contextlib.contextmanager
def span(name: str, parent: Any = None, **attributes: Any) -> Iterator[None]:
    if _tracer is None:
        yield
        return
    attrs = {k: v for k, v in attributes.items() if v is not None}
    with _tracer.start_as_current_span(name, context=parent, attributes=attrs):
        yield
