"""Tokenizer loading (HF directory or GGUF, cached on disk), batched encoding, incremental detokenization."""
from __future__ import annotations

import bisect
import json
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

from .errors import EngineError
from .model_files import cache_dir, default_model_path, file_digest

logger = logging.getLogger(__name__)


def encode_many(tokenizer, texts: list[str]) -> list[list[int]]:
    """``[tokenizer.encode(t) for t in texts]``, in one batched call where the tokenizer has one (a Hugging
    Face fast tokenizer encodes a batch in Rust without holding the GIL, in parallel). A text that extends
    one encoded before (a program's prompt grows by appending) encodes only its new part where that is
    exact (:class:`PrefixIds`)."""
    if not _batch_encodes(tokenizer):
        return [tokenizer.encode(t) for t in texts]
    cache = PrefixIds.of(tokenizer)
    if cache is None:
        if len(texts) > 1:
            return [list(x) for x in tokenizer(texts, add_special_tokens=True)["input_ids"]]
        return [tokenizer.encode(t) for t in texts]
    return cache.encode_many(texts)


class PrefixIds:
    """Token ids of recently encoded texts' prefixes, each cut where splitting the encoding is exact, so a
    text that extends one of them encodes only the rest.

    Exactness (byte-level BPE with the GPT-2 pre-tokenizer regex, no normalizer, no added token stripping
    its neighbours, special tokens only prepended): BPE never merges across pre-tokens, and a cut right after
    a single ``\\n`` between two characters that are not whitespace is a pre-token boundary whatever follows:
    the only alternatives that match ``\\n`` are whitespace runs, and a run of one ends there. (A longer run
    would not do: at the end of a string ``\\s+(?!\\S)`` keeps ``\\n\\n`` whole, before a letter it splits
    it.) No added token contains ``\\n``, so none spans the cut. Then ``ids(text) = ids(text[:cut]) +
    ids(text[cut:])`` (the latter without special tokens). :meth:`of` checks the tokenizer qualifies and
    verifies the rule on probe texts; otherwise nothing is cached.
    """

    MAX_ENTRIES = 512
    _PROBES = ("Hello world.\nQuestion: 12 + 345?\nAnswer:", "a\n\nb\n c\nd", "<|im_start|>user\nHi<|im_end|>\nOk")

    def __init__(self, tokenizer) -> None:
        self.tok = tokenizer
        self.entries: OrderedDict[str, list[int]] = OrderedDict()
        self.lock = threading.Lock()

    @classmethod
    def of(cls, tokenizer) -> PrefixIds | None:
        """The tokenizer's cache (made on first use), or None when the rule is not known to hold for it."""
        cache = getattr(tokenizer, "_sglc_prefix_ids", False)
        if cache is False:
            cache = cls(tokenizer) if _prefix_rule_holds(tokenizer) else None
            if cache is not None and not all(cache._check(p) for p in cls._PROBES):
                cache = None   # NOTE: a tokenizer the rule misjudged: encode in full
            tokenizer._sglc_prefix_ids = cache
        return cache

    def _check(self, text: str) -> bool:
        full = self.tok.encode(text)
        for cut in _cuts(text):
            head = self.tok(text[:cut], add_special_tokens=True)["input_ids"]
            if list(head) + self.tok.encode(text[cut:], add_special_tokens=False) != full:
                return False
        return True

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        out: list[list[int] | None] = [None] * len(texts)
        heads: list[tuple[int, int, list[int]]] = []    # (text index, cut, ids of text[:cut])
        full: list[int] = []
        with self.lock:
            for i, t in enumerate(texts):
                hit = self._lookup(t)
                if hit is None:
                    full.append(i)
                else:
                    heads.append((i, *hit))
        if full:
            enc = self.tok([texts[i] for i in full], add_special_tokens=True, return_offsets_mapping=True)
            for i, ids, offs in zip(full, enc["input_ids"], enc["offset_mapping"]):
                out[i] = list(ids)
                self._store(texts[i], out[i], offs, 0, 0)
        if heads:
            rests = [texts[i][cut:] for i, cut, _ in heads]
            enc = self.tok(rests, add_special_tokens=False, return_offsets_mapping=True)
            for (i, cut, head), ids, offs in zip(heads, enc["input_ids"], enc["offset_mapping"]):
                out[i] = head + list(ids)
                self._store(texts[i], out[i], offs, cut, len(head))
        return out   # type: ignore[return-value]

    def _lookup(self, text: str) -> tuple[int, list[int]] | None:
        for cut in _cuts(text):
            key = text[:cut]
            ids = self.entries.get(key)
            if ids is not None:
                self.entries.move_to_end(key)
                return cut, ids
        return None

    def _store(self, text: str, ids: list[int], offsets, base: int, skip: int) -> None:
        """Remember ``text``'s ids up to its last two cuts (the next prompt often shares all but the last line
        or two) and one near its middle; ``offsets`` are those of ``ids[skip:]`` (chars from ``base``)."""
        cuts = [c for c in _cuts(text) if c > base]
        if not cuts:
            return
        keep = cuts[:2] + ([cuts[len(cuts) // 2]] if len(cuts) > 4 else [])
        ends = [base + b for _, b in offsets]
        with self.lock:
            for cut in keep:
                # NOTE: by end offset: a token never spans a cut, and a whitespace token's trimmed offsets may
                # be empty
                key = text[:cut]
                self.entries[key] = ids[:skip + bisect.bisect_right(ends, cut)]
                self.entries.move_to_end(key)
            while len(self.entries) > self.MAX_ENTRIES:
                self.entries.popitem(last=False)


def _cuts(text: str):
    """Positions right after a single ``\\n`` between two non-whitespace characters, last first."""
    i = len(text) - 1
    while True:
        i = text.rfind("\n", 0, i)
        if i < 1:
            return
        if not text[i - 1].isspace() and i + 1 < len(text) and not text[i + 1].isspace():
            yield i + 1


def _prefix_rule_holds(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    try:
        spec = json.loads(backend.to_str())
    except Exception:  # noqa: BLE001 -- an unusual tokenizer: no shortcut
        return False
    pre = spec.get("pre_tokenizer") or {}
    if spec.get("normalizer") is not None or pre.get("type") != "ByteLevel" or not pre.get("use_regex") \
            or pre.get("add_prefix_space"):
        return False
    for tok in spec.get("added_tokens", []):
        if tok.get("lstrip") or tok.get("rstrip") or "\n" in tok.get("content", "") or tok.get("single_word"):
            return False
    plain = tokenizer.encode("a\nb", add_special_tokens=False)
    full = tokenizer.encode("a\nb")
    return full[len(full) - len(plain):] == plain   # NOTE: special tokens only prepended


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
