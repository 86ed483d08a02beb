"""The runtime layer's exception type."""
from __future__ import annotations


class EngineError(ValueError):
    """A request or configuration the engine cannot serve; the message names the field and the fix."""
