"""Prometheus text exposition of ``Engine.metrics()`` (served on HTTP ``/metrics``)."""
from __future__ import annotations

import math
from typing import Any

PREFIX = "sglc_"

_HELP = {
    "num_requests_total": "Requests finished by the engine.",
    "prompt_tokens_total": "Prompt tokens processed.",
    "generation_tokens_total": "Tokens generated.",
    "cached_tokens_total": "Prompt tokens served from the radix cache.",
    "cache_hit_rate": "Fraction of prompt tokens served from the radix cache.",
    "num_running_reqs": "Requests in the running batch.",
    "num_waiting_reqs": "Requests in the waiting queue.",
    "kv_total_tokens": "KV pool capacity in tokens.",
    "kv_used_tokens": "KV pool tokens in use (running requests and radix cache).",
    "kv_free_tokens": "KV pool tokens free.",
    "forward_passes_total": "Model forward passes run.",
    "prefill_passes_total": "Forward passes that prefill/extend (the rest decode).",
    "mixed_passes_total": "Prefill passes that also carried running requests' decode rows.",
    "cascade_rows_total": "Decode rows that read their shared prefix once per chunk of rows (cascade).",
    "gc_frozen_objects": "Start-up objects the worker process moved out of the garbage collector's scans.",
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


def _fmt(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def render(metrics: dict[str, Any], extra: dict[str, float] | None = None) -> str:
    """Prometheus text for every numeric metric; ``*_total`` keys are counters, the rest gauges.

    ``extra`` adds server-side values (e.g. ``kv_usage`` computed from the engine's numbers).
    """
    lines: list[str] = []
    for key, raw in {**metrics, **(extra or {})}.items():
        value = _number(raw)
        if value is None:
            continue
        name = PREFIX + "".join(c if c.isalnum() or c == "_" else "_" for c in key)
        kind = "counter" if key.endswith("_total") else "gauge"
        lines.append(f"# HELP {name} {_HELP.get(key, key.replace('_', ' ') + '.')}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name} {_fmt(value)}")
    return "\n".join(lines) + "\n"


def kv_usage(metrics: dict[str, Any]) -> dict[str, float]:
    """The KV usage fraction (used / total) derived from the engine's token counts, when present."""
    total, used = _number(metrics.get("kv_total_tokens")), _number(metrics.get("kv_used_tokens"))
    if total and used is not None:
        return {"kv_usage": used / total}
    return {}


def parse(text: str) -> dict[str, float]:
    """Parse Prometheus text back into ``{name_without_prefix: value}`` (tests and bench use it)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        out[name.removeprefix(PREFIX)] = float(value)
    return out
