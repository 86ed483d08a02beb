"""Tokenizer loading (HF directory or GGUF, cached on disk), batched encoding, incremental detokenization."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import EngineError
from .model_files import cache_dir, default_model_path, file_digest

logger = logging.getLogger(__name__)


def encode_many(tokenizer, texts: list[str]) -> list[list[int]]:
    """``[tokenizer.encode(t) for t in texts]``, in one batched call where the tokenizer has one (a Hugging
    Face fast tokenizer encodes a batch in Rust without holding the GIL, in parallel)."""
    if len(texts) > 1 and _batch_encodes(tokenizer):
        return [list(x) for x in tokenizer(texts, add_special_tokens=True)["input_ids"]]
    return [tokenizer.encode(t) for t in texts]


def _batch_encodes(tokenizer) -> bool:
    try:
        from transformers import PreTrainedTokenizerBase
    except ImportError:   # pragma: no cover -- the engine's tokenizers come from transformers
        return False
    return isinstance(tokenizer, PreTrainedTokenizerBase)


def load_tokenizer(model_path: str | None = None, tokenizer_path: str | None = None):
    """Load a Hugging Face tokenizer for ``model_path`` (a HF directory or a ``.gguf`` file).

    GGUF tokenizers are converted once through ``transformers`` and cached under the cache dir,
    keyed by the file's content hash, so later loads take well under a second.
    """
    from transformers import AutoTokenizer

    path = tokenizer_path or model_path or default_model_path()
    if str(path).endswith(".gguf"):
        cached = cache_dir() / "tokenizers" / file_digest(path)
        if not (cached / "tokenizer_config.json").exists():
            logger.info("converting the GGUF tokenizer of %s (once)", path)
            tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
            tmp = cached.with_name(f"{cached.name}.tmp{os.getpid()}")
            tok.save_pretrained(tmp)
            if cached.exists():  # NOTE: another process converted it meanwhile
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
            else:
                os.replace(tmp, cached)
        return AutoTokenizer.from_pretrained(str(cached))
    if not Path(path).exists():
        raise EngineError(f"tokenizer path {path!r} does not exist (sglc never downloads from a hub)")
    return AutoTokenizer.from_pretrained(str(path))
