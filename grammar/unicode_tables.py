"""Code point ranges of Python's ``\\w``, ``\\d`` and ``\\s`` (``str`` semantics).

The ranges are generated once from ``str.isalnum``/``isdecimal``/``isspace`` (what ``re``
uses for str patterns) and stored next to this file, tagged with the Unicode version.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import unicodedata
from pathlib import Path

logger = logging.getLogger(__name__)

_TABLE = Path(__file__).with_name("unicode_ranges.json")
Ranges = tuple[tuple[int, int], ...]


def _scan(pred) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    start = None
    for cp in range(0x110000):
        ok = pred(chr(cp))
        if ok and start is None:
            start = cp
        elif not ok and start is not None:
            out.append((start, cp - 1))
            start = None
    if start is not None:
        out.append((start, 0x10FFFF))
    return out


def _generate() -> dict:
    logger.info("generating Unicode class ranges for Unicode %s", unicodedata.unidata_version)
    return {
        "unicode": unicodedata.unidata_version,
        "word": _scan(lambda c: c.isalnum() or c == "_"),
        "digit": _scan(str.isdecimal),
        "space": _scan(str.isspace),
    }


@functools.lru_cache(maxsize=1)
def _tables() -> dict:
    try:
        data = json.loads(_TABLE.read_text())
        if data.get("unicode") == unicodedata.unidata_version:
            return data
    except (OSError, ValueError):
        pass
    data = _generate()
    try:
        tmp = _TABLE.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, separators=(",", ":")))
        os.replace(tmp, _TABLE)
    except OSError:  # read-only install: keep the in-memory table
        logger.debug("could not write %s", _TABLE)
    return data


def category_ranges(name: str, ascii_only: bool = False) -> Ranges:
    """Ranges of ``name`` in {"word", "digit", "space"}; ``ascii_only`` for the ``re.ASCII`` flag."""
    if ascii_only:
        table = {"word": ((48, 57), (65, 90), (95, 95), (97, 122)), "digit": ((48, 57),),
                 "space": ((9, 13), (32, 32))}
        return table[name]
    return tuple(tuple(r) for r in _tables()[name])  # type: ignore[misc]
