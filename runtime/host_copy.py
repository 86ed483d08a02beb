"""Host-to-device copies that never wait for the GPU.

A plain ``torch.tensor(values, device="cuda")`` copies from pageable memory and synchronizes the stream:
the host then waits for every kernel already queued, which defeats launching step N+1 while step N runs.
Values go through pinned memory with ``non_blocking=True`` instead (torch's pinned allocator keeps the
buffer alive until the copy has run).
"""
from __future__ import annotations

from array import array

import torch

_ARRAY_CODES = {torch.int32: "i", torch.long: "q", torch.float32: "f"}


def h2d(values: list, dtype: torch.dtype, device) -> torch.Tensor:
    """``values`` as a tensor on ``device`` (no stream sync on CUDA)."""
    dev = torch.device(device)
    if len(values) >= 4096 and dtype in _ARRAY_CODES:
        # NOTE: torch.tensor(list) costs ~35 ns per element; array + frombuffer is ~5x faster.
        host = torch.frombuffer(array(_ARRAY_CODES[dtype], values), dtype=dtype)
    else:
        host = torch.tensor(values, dtype=dtype)
    return _upload(host, dev)


ALIGN = 4   # int32 elements: 16 bytes


def h2d_parts(parts: list[list[int]], device) -> tuple[torch.Tensor, list[int]]:
    """``parts`` in one int32 tensor on ``device`` (one copy) and where each starts: part i is
    ``flat[starts[i]:starts[i] + len(parts[i])]``, and every part starts at a 16-byte boundary.

    NOTE: Triton specializes a kernel on whether each pointer argument is 16-byte aligned. Packed back to back,
    a part's alignment would depend on the lengths of the parts before it, i.e. on the batch: a server would
    then compile new variants of its attention kernels mid-serving whenever a batch brings a new pattern (a
    few seconds each on an H100). Padding each part to ``ALIGN`` elements fixes every pattern."""
    buf = array("i")
    starts = []
    for part in parts:
        pad = -len(buf) % ALIGN
        if pad:
            buf.extend(_PAD[:pad])
        starts.append(len(buf))
        buf.extend(part)   # NOTE: C-speed; a flattening list comprehension costs ~30 ns per element
    host = torch.frombuffer(buf, dtype=torch.int32) if len(buf) else torch.empty(0, dtype=torch.int32)
    return _upload(host, torch.device(device)), starts


_PAD = array("i", [0] * ALIGN)


def aligned(t: torch.Tensor) -> torch.Tensor:
    """``t``, or a copy of it if its data does not start at a 16-byte boundary (a view into the middle of an
    array, e.g. a mixed pass's decode-row ``kv_indptr[b:]``): see :func:`h2d_parts` for why."""
    return t if t.data_ptr() % 16 == 0 else t.clone()


def pinned(values: list[int], dtype: torch.dtype = torch.int32) -> torch.Tensor:
    """``values`` as a host tensor, in pinned memory where CUDA is: for an API that copies it to the GPU itself
    with ``non_blocking=True`` (FlashInfer's ``plan``). Torch's caching host allocator reuses the blocks."""
    t = torch.tensor(values, dtype=dtype)
    return t.pin_memory() if torch.cuda.is_available() else t


def _upload(host: torch.Tensor, dev: torch.device) -> torch.Tensor:
    return host.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else host
