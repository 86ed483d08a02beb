"""What the grammar layer needs to know about a tokenizer: each token id's bytes, EOS, specials.

Handles byte-level BPE vocabularies (GPT-2 byte alphabet, e.g. ``Ġ`` for space), SentencePiece
vocabularies (``▁`` for space, ``<0xAB>`` byte-fallback tokens) and plain text vocabularies.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import GrammarError

logger = logging.getLogger(__name__)
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")
# NOTE: a cache keyed by the (weakly held) tokenizer object, so `from_hf` is cheap on every call.
_INFO_CACHE: weakref.WeakKeyDictionary[Any, TokenizerInfo] = weakref.WeakKeyDictionary()


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode``."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


@dataclass(frozen=True, eq=False)
class TokenData:
    """Token bytes pre-split into complete characters and a partial UTF-8 tail (numpy, per vocab)."""

    ids: np.ndarray        # int32 [T] tokens that start at a character boundary
    off: np.ndarray        # int64 [T+1] offsets into cp_idx
    clen: np.ndarray       # int32 [T] complete characters per token
    cp_idx: np.ndarray     # int32 [sum clen] index into cps
    cps: np.ndarray        # int64 [U] unique code points
    tail_lo: np.ndarray    # int64 [T] smallest code point the partial tail can start (-1: none)
    tail_hi: np.ndarray    # int64 [T]
    tail_bytes: dict       # token id → partial tail bytes
    cont: dict             # token id → bytes, tokens starting with a UTF-8 continuation byte


@dataclass(frozen=True, eq=False)
class TokenizerInfo:
    """Vocabulary as bytes per token id (``None`` for special/unusable tokens), EOS and specials.

    ``vocab_size`` is the tokenizer's number of ids; models may have wider logits (extra bits stay 0).
    """

    token_bytes: tuple[bytes | None, ...]
    eos_token_id: int
    special_ids: frozenset[int] = frozenset()
    _memo: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def vocab_size(self) -> int:
        return len(self.token_bytes)

    @property
    def fingerprint(self) -> str:
        """sha256 over token bytes, EOS and specials: identifies the vocabulary in cache keys."""
        fp = self._memo.get("fp")
        if fp is None:
            h = hashlib.sha256()
            for i, b in enumerate(self.token_bytes):
                h.update(b"\x00N" if b is None else len(b).to_bytes(4, "little") + b)
            h.update(repr((self.eos_token_id, sorted(self.special_ids))).encode())
            fp = self._memo["fp"] = h.hexdigest()
        return fp

    @classmethod
    def from_vocab(cls, vocab: Sequence[str | None], eos_token_id: int,
                   special_ids: Sequence[int] = (), style: str = "auto") -> TokenizerInfo:
        """Build from token strings as the tokenizer spells them; ``style`` in
        {"auto", "byte_level", "sentencepiece", "plain"}."""
        specials = frozenset(int(i) for i in special_ids) | {int(eos_token_id)}
        if style == "auto":
            style = _guess_style(vocab)
        decode = {"byte_level": _decode_byte_level, "sentencepiece": _decode_sentencepiece,
                  "plain": lambda s: s.encode("utf-8")}.get(style)
        if decode is None:
            raise GrammarError(f"unknown vocabulary style {style!r}; use byte_level, sentencepiece or plain")
        out: list[bytes | None] = []
        for i, s in enumerate(vocab):
            out.append(None if s is None or i in specials else decode(s))
        return cls(tuple(out), int(eos_token_id), specials)

    @classmethod
    def from_hf(cls, tokenizer: Any) -> TokenizerInfo:
        """From a Hugging Face tokenizer (cached per tokenizer object)."""
        try:
            cached = _INFO_CACHE.get(tokenizer)
        except TypeError:
            cached = None
        if cached is not None:
            return cached
        vocab = tokenizer.get_vocab()
        size = max(len(tokenizer), max(vocab.values()) + 1)
        strings: list[str | None] = [None] * size
        for s, i in vocab.items():
            strings[i] = s
        specials = set(getattr(tokenizer, "all_special_ids", []) or [])
        for i, tok in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items():
            if getattr(tok, "special", True):
                specials.add(int(i))
        if tokenizer.eos_token_id is None:
            raise GrammarError("the tokenizer has no EOS token; set tokenizer.eos_token first")
        info = cls.from_vocab(strings, tokenizer.eos_token_id, sorted(specials), _hf_style(tokenizer, strings))
        try:
            _INFO_CACHE[tokenizer] = info
        except TypeError:
            logger.debug("tokenizer %r cannot be weakly referenced; not cached", type(tokenizer))
        return info

    def token_data(self) -> TokenData:
        """The per-vocabulary arrays the token index walks (computed once)."""
        data = self._memo.get("data")
        if data is None:
            data = self._memo["data"] = _split_tokens(self.token_bytes)
        return data


def _hf_style(tokenizer: Any, strings: Sequence[str | None]) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = repr(getattr(backend, "decoder", "")) if backend is not None else ""
    if "ByteLevel" in decoder:
        return "byte_level"
    if "ByteFallback" in decoder or "Metaspace" in decoder or "▁" in decoder:
        return "sentencepiece"
    return _guess_style(strings)


def _guess_style(vocab: Sequence[str | None]) -> str:
    words = [s for s in vocab if s]
    if sum(s.startswith("▁") for s in words) > len(words) // 20 or any(_BYTE_TOKEN.fullmatch(s) for s in words):
        return "sentencepiece"
    table = _byte_decoder()
    if any("Ġ" in s for s in words) and all(c in table for s in words[:2000] for c in s):
        return "byte_level"
    return "plain"


def _decode_byte_level(s: str) -> bytes | None:
    table = _byte_decoder()
    try:
        return bytes(table[c] for c in s)
    except KeyError:  # added tokens spelled in plain text
        return s.encode("utf-8")


def _decode_sentencepiece(s: str) -> bytes | None:
    m = _BYTE_TOKEN.fullmatch(s)
    if m:
        return bytes([int(m.group(1), 16)])
    return s.replace("▁", " ").encode("utf-8")


def tail_interval(tail: bytes) -> tuple[int, int]:
    """Code points whose UTF-8 encoding starts with the incomplete ``tail`` (lo > hi: none)."""
    lead = tail[0]
    n = 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4 if lead >> 3 == 0b11110 else 0
    if n == 0 or len(tail) >= n or lead in (0xC0, 0xC1) or lead > 0xF4:
        return 1, 0
    bits = lead & (0x7F >> n)
    for b in tail[1:]:
        bits = (bits << 6) | (b & 0x3F)
    missing = n - len(tail)
    lo, hi = bits << (6 * missing), (bits << (6 * missing)) | ((1 << (6 * missing)) - 1)
    lo = max(lo, (0x80, 0x800, 0x10000)[n - 2])
    hi = min(hi, (0x7FF, 0xFFFF, 0x10FFFF)[n - 2])
    if 0xD800 <= lo and hi <= 0xDFFF:
        return 1, 0
    return lo, hi


def split_utf8(data: bytes) -> tuple[str | None, bytes]:
    """(complete characters, incomplete tail) or (None, b"") if ``data`` is not such a prefix."""
    try:
        return data.decode("utf-8"), b""
    except UnicodeDecodeError as e:
        if e.reason != "unexpected end of data":
            return None, b""
        head, tail = data[:e.start], data[e.start:]
        lo, hi = tail_interval(tail)
        if lo > hi:
            return None, b""
        return head.decode("utf-8"), tail


def _split_tokens(token_bytes: Sequence[bytes | None]) -> TokenData:
    ids, texts, tails_lo, tails_hi = [], [], [], []
    tail_bytes: dict[int, bytes] = {}
    cont: dict[int, bytes] = {}
    for i, b in enumerate(token_bytes):
        if not b:
            continue
        if b[0] & 0xC0 == 0x80:
            cont[i] = b
            continue
        text, tail = split_utf8(b)
        if text is None:
            continue
        ids.append(i)
        texts.append(text)
        lo, hi = tail_interval(tail) if tail else (-1, -1)
        if tail:
            tail_bytes[i] = tail
        tails_lo.append(lo)
        tails_hi.append(hi)
    flat = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    clen = np.fromiter((len(t) for t in texts), dtype=np.int32, count=len(texts))
    off = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(clen, out=off[1:])
    cps, cp_idx = np.unique(flat, return_inverse=True)
    return TokenData(np.asarray(ids, dtype=np.int32), off, clen, cp_idx.astype(np.int32).reshape(-1), cps,
                     np.asarray(tails_lo, dtype=np.int64), np.asarray(tails_hi, dtype=np.int64), tail_bytes, cont)
