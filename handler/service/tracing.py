"""OpenTelemetry spans around each Job, when the OTel API is installed.

The W3C trace context itself needs no library: ``traceparent``/``tracestate`` are parsed
into the ``WorkRequest`` and copied, unchanged, onto the Job and the reply. This module
adds a span per request, a child of the request's ``traceparent``, for deployments that
run an OTel SDK; the import is optional (``pip install mstc-cloud-worker[otel]``) and
without a configured SDK the API hands out non-recording spans, which cost next to
nothing. No exporter is chosen here: that is the SDK's configuration.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

try:
    from opentelemetry import propagate, trace
except ImportError:  # the otel extra is not installed
    trace = None  # type: ignore[assignment]
    propagate = None  # type: ignore[assignment]

from handler.core.request import WorkRequest

TRACER = "handler"


@contextmanager
def job_span(request: WorkRequest) -> Iterator[Any]:
    """A span for running ``request``'s Job; yields it (or None without OTel)."""
    if trace is None:
        yield None
        return
    carrier = {k: v for k, v in (("traceparent", request.traceparent), ("tracestate", request.tracestate)) if v}
    context = propagate.extract(carrier) if carrier else None
    attributes = {
        "cloud_worker.request_id": request.request_id,
        "cloud_worker.job_name": request.job_name,
        "cloud_worker.image": request.image,
    }
    if request.correlation_id:
        attributes["messaging.message.conversation_id"] = request.correlation_id
    tracer = trace.get_tracer(TRACER)
    with tracer.start_as_current_span("cloud-worker job", context=context, kind=trace.SpanKind.CONSUMER,
                                      attributes=attributes) as span:
        yield span


def record_status(span: Any, status: str) -> None:
    """Put the request's final status on its span (a no-op without one)."""
    if span is not None:
        span.set_attribute("cloud_worker.status", status)
