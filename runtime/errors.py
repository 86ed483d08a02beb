"""The runtime layer's exception types: one base, two refinements the adapters map to status codes."""
from __future__ import annotations


class EngineError(ValueError):
    """A request or configuration the engine cannot serve; the message names the field and the fix.
    Servers map it to HTTP 400 / gRPC INVALID_ARGUMENT."""


class EngineUnsupported(EngineError):
    """A feature that exists in the API but is not implemented here (→ 501 / UNIMPLEMENTED)."""


class EngineUnavailable(EngineError):
    """The engine is shut down or its worker died (→ 503 / UNAVAILABLE)."""
