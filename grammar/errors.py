"""The one exception type of the grammar layer."""
from __future__ import annotations


class GrammarError(ValueError):
    """A constraint could not be compiled; the message says what to change."""
