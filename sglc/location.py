"""Finding the user's source line (the first stack frame outside the sglc package)."""
from __future__ import annotations

import os
import sys

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


def user_location(skip: int = 1) -> str:
    """``"file.py:LINE"`` of the innermost caller frame that is not sglc's own code ("" if none)."""
    frame = sys._getframe(skip)
    while frame is not None:
        path = frame.f_code.co_filename
        if not os.path.abspath(path).startswith(_PKG_DIR + os.sep) and "threading.py" not in path:
            return f"{os.path.basename(path)}:{frame.f_lineno}"
        frame = frame.f_back
    return ""


def user_source_line(skip: int = 1) -> tuple[str, str]:
    """``(location, source text of that line)`` for error messages."""
    import linecache

    frame = sys._getframe(skip)
    while frame is not None:
        path = frame.f_code.co_filename
        if not os.path.abspath(path).startswith(_PKG_DIR + os.sep):
            line = linecache.getline(path, frame.f_lineno).strip()
            return f"{os.path.basename(path)}:{frame.f_lineno}", line
        frame = frame.f_back
    return "", ""
