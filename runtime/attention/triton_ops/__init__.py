"""Triton kernels for attention over the token-paged KV pool (decode: split-KV GQA; extend: prefix-aware)."""
