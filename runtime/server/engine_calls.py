"""Calls into the Engine shared by the gRPC and HTTP adapters.

The one job here: call ``Engine.async_*`` the same way from both protocols, make sure a request
whose client went away (cancelled, disconnected, deadline passed) is aborted in the engine so its
KV cache is freed, and classify failures (bad input, unsupported, engine down, internal).
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from typing_extensions import Self

from runtime.errors import EngineError
from runtime.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

# Substrings of an EngineError message that mean "not supported (yet)" / "the engine is down" rather
# than "bad input".
_UNSUPPORTED_MARKERS = ("not supported", "unsupported", "not implemented")
_UNAVAILABLE_MARKERS = ("engine is not running", "worker died", "worker crashed", "connection closed")


def new_rid() -> str:
    """A fresh request id."""
    return uuid.uuid4().hex


def classify(err: Exception) -> str:
    """``"invalid"`` (bad input), ``"unsupported"``, ``"unavailable"`` (engine down) or ``"internal"``.

    NOTE: the Engine raises one exception type (EngineError) for all of these; the kind is read
    from its message until it has subclasses (docs/requests-from-servers.md #7).
    """
    if not isinstance(err, EngineError):
        return "internal"
    msg = str(err).lower()
    if any(m in msg for m in _UNAVAILABLE_MARKERS):
        return "unavailable"
    if any(m in msg for m in _UNSUPPORTED_MARKERS):
        return "unsupported"
    return "invalid"


def check_sampling_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """Validate through ``SamplingParams.from_dict`` (raises EngineError naming the field); returns the dict."""
    params = dict(params or {})
    SamplingParams.from_dict(params)
    return params


async def _resolve(value: Any) -> Any:
    # NOTE: the contract allows async_generate(stream=True) to be an async generator or a coroutine
    # returning one; accept both.
    return await value if inspect.isawaitable(value) else value


async def generate(engine: Any, **kwargs: Any) -> Any:
    """Non-streaming generate; aborts the request in the engine if this call is cancelled."""
    rid = kwargs.get("rid")
    try:
        return await _resolve(engine.async_generate(stream=False, **kwargs))
    except (asyncio.CancelledError, GeneratorExit):
        _abort_quietly(engine, rid)
        raise


class GenerationStream:
    """An async iterator over the engine's stream chunks that aborts the request unless it finished.

    Use ``await stream.start()`` first: it fetches the first chunk, so input errors (EngineError)
    surface before a response is committed (HTTP status, SSE headers). Always ``await stream.close()``
    (or use ``async with``) — closing an unfinished stream aborts its request.
    """

    def __init__(self, engine: Any, rid: str | None = None, **kwargs: Any) -> None:
        self.engine = engine
        self.rid = rid
        self._kwargs = kwargs
        self._it: AsyncIterator[dict] | None = None
        self._first: dict | None = None
        self._done = False

    async def start(self) -> None:
        """Submit the request and wait for its first chunk (raises EngineError for bad input)."""
        try:
            self._it = await _resolve(self.engine.async_generate(stream=True, rid=self.rid, **self._kwargs))
            self._first = await self._it.__anext__()
        except StopAsyncIteration:
            self._done = True
        except BaseException:
            await self.close()
            raise

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> dict:
        if self._first is not None:
            chunk, self._first = self._first, None
            return chunk
        if self._done or self._it is None:
            raise StopAsyncIteration
        try:
            return await self._it.__anext__()
        except StopAsyncIteration:
            self._done = True
            raise

    async def close(self) -> None:
        """Close the engine iterator; abort the request if it did not run to the end."""
        it, self._it = self._it, None
        if it is not None and hasattr(it, "aclose"):
            try:
                await it.aclose()
            except Exception:
                logger.exception("closing the engine stream of %s failed", self.rid)
        if not self._done:
            self._done = True
            _abort_quietly(self.engine, self.rid)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _abort_quietly(engine: Any, rid: str | None) -> None:
    if rid is None:
        return
    logger.info("aborting request %s (client gone)", rid)
    try:
        engine.abort(rid)
    except Exception:
        logger.exception("abort(%s) failed", rid)


async def call(engine: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``Engine.<name>``: its ``async_<name>`` variant when it has one, else the sync method.

    Sync methods that may block (warm prefills, flush waits) run in a worker thread so the event
    loop keeps serving; cheap ones (metrics, model_info, abort) could run inline but the cost is small.
    """
    async_fn = getattr(engine, f"async_{name}", None)
    if async_fn is not None:
        return await _resolve(async_fn(*args, **kwargs))
    return await asyncio.to_thread(getattr(engine, name), *args, **kwargs)


async def gather_all(coros: list[Any]) -> list[Any]:
    """Run coroutines concurrently; when one fails, cancel the rest (which aborts their requests)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def start_all(streams: list[GenerationStream]) -> None:
    """Start every stream (first chunks arrive concurrently); on failure close them all and re-raise."""
    try:
        await gather_all([s.start() for s in streams])
    except BaseException:
        await asyncio.gather(*(s.close() for s in streams), return_exceptions=True)
        raise


async def merge(streams: list[GenerationStream]) -> AsyncIterator[tuple[int, dict]]:
    """Yield ``(stream_index, chunk)`` from several started streams as chunks arrive; closes them all."""
    if len(streams) == 1:  # NOTE: the common case needs no tasks or queue
        try:
            async for chunk in streams[0]:
                yield 0, chunk
        finally:
            await streams[0].close()
        return
    queue: asyncio.Queue[tuple[int, dict | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, stream: GenerationStream) -> None:
        try:
            async for chunk in stream:
                await queue.put((i, chunk))
            await queue.put((i, None))
        except Exception as err:  # noqa: BLE001 - forwarded to the consumer
            await queue.put((i, err))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(streams)
        while remaining:
            i, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(s.close() for s in streams), return_exceptions=True)


def new_rows(rows: list | None, sent: int, num_new: int) -> list:
    """The logprob rows of a stream chunk's new tokens, whether the engine sends them cumulative or per chunk."""
    rows = rows or []
    if len(rows) == sent + num_new:
        return rows[sent:]
    return rows[-num_new:] if num_new else []
