"""``@function`` programs: ``run``, ``run_batch``, ``bind``, ``trace``, ``run_graph``; the default backend."""
from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ir

from .backend.base import Backend
from .errors import InterpreterError
from .executor import RunContext
from .graph_interpreter import run_graph
from .sampling import LOGPROB_KEYS, SAMPLING_FIELDS, to_params
from .state import ProgramState, new_root_state
from .tracer import trace_function

logger = logging.getLogger(__name__)
_SAMPLING_NAMES = SAMPLING_FIELDS | set(LOGPROB_KEYS) | {"max_tokens", "min_tokens"}


class _DefaultBackend:
    """The backend ``set_default_backend`` installs.

    NOTE: SGLang's API makes this process-wide by design; it is the only global the frontend keeps.
    """

    def __init__(self) -> None:
        self.backend: Backend | None = None
        self.lock = threading.Lock()


_DEFAULT = _DefaultBackend()
_WRAPPED: dict[int, Backend] = {}


def as_backend(obj: Any) -> Backend:
    """A frontend backend for ``obj``: a Backend as is, a runtime ``Engine`` wrapped (once)."""
    if isinstance(obj, Backend):
        return obj
    if hasattr(obj, "generate") and hasattr(obj, "score"):
        with _DEFAULT.lock:
            if id(obj) not in _WRAPPED:
                from .backend.engine import EngineBackend

                _WRAPPED.clear()  # NOTE: keep at most one wrapper: engines are few and long-lived.
                _WRAPPED[id(obj)] = EngineBackend(obj)
            return _WRAPPED[id(obj)]
    raise TypeError(f"{type(obj).__name__} is not a backend; pass sgl.Engine(), sgl.OpenAI(...), "
                    "sgl.Anthropic(...) or sgl.RuntimeEndpoint(url)")


def set_default_backend(backend: Any) -> None:
    """Use ``backend`` for programs run without ``backend=`` (e.g. ``sgl.set_default_backend(sgl.Engine())``)."""
    _DEFAULT.backend = as_backend(backend)


def get_default_backend() -> Backend | None:
    return _DEFAULT.backend


def resolve_backend(backend: Any = None) -> Backend:
    if backend is not None:
        return as_backend(backend)
    if _DEFAULT.backend is None:
        raise InterpreterError("no backend: call sgl.set_default_backend(sgl.Engine()) first, "
                               "or pass backend=... to run()")
    return _DEFAULT.backend


def flush_cache(backend: Any = None) -> bool:
    """Flush the backend's prefix cache."""
    return resolve_backend(backend).flush_cache()


def get_server_info(backend: Any = None) -> dict[str, Any]:
    """Information about the backend (model, limits)."""
    return resolve_backend(backend).get_server_info()


class SglFunction:
    """A program: a Python function whose first parameter is the state ``s``."""

    def __init__(self, func: Callable[..., Any], bind_arguments: dict[str, Any] | None = None) -> None:
        self.func = func
        self.bind_arguments = dict(bind_arguments or {})
        self.name = func.__name__
        params = list(inspect.signature(func).parameters.values())[1:]
        variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        self.arg_names = [p.name for p in params if p.kind not in variadic]
        # ``def prog(s, **kwargs)``: keyword arguments that are neither parameters nor sampling go to it
        self.takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def bind(self, **kwargs: Any) -> SglFunction:
        """A copy with some arguments fixed."""
        return SglFunction(self.func, {**self.bind_arguments, **kwargs})

    def _split(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        if len(args) > len(self.arg_names):
            raise TypeError(f"{self.name}() takes {len(self.arg_names)} argument(s), got {len(args)}")
        arguments = {**self.bind_arguments, **dict(zip(self.arg_names, args))}
        sampling: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key in self.arg_names:
                arguments[key] = value
            elif key in _SAMPLING_NAMES:
                sampling[key] = value
            elif self.takes_kwargs:
                arguments[key] = value
            else:
                raise TypeError(f"{self.name}() got an unexpected argument {key!r} (not a program parameter "
                                f"{self.arg_names} nor a sampling parameter)")
        return arguments, to_params(**sampling)

    def run(self, *args: Any, stream: bool = False, backend: Any = None, use_thread: bool = True,
            **kwargs: Any) -> ProgramState:
        """Run eagerly. ``kwargs`` are program arguments or run-wide sampling defaults
        (``temperature=0``, ``max_new_tokens=64``, ...). With ``stream=True`` it returns at once;
        iterate ``state.text_iter()``. ``use_thread`` is accepted for SGLang compatibility."""
        del use_thread  # NOTE: streams always run on their own threads here
        arguments, defaults = self._split(args, kwargs)
        return self._run(arguments, defaults, resolve_backend(backend), stream, raise_errors=True)

    def _run(self, arguments: dict[str, Any], defaults: dict[str, Any], backend: Backend, stream: bool,
             raise_errors: bool) -> ProgramState:
        ctx = RunContext(backend, defaults, arguments, stream)
        state = new_root_state(ctx)
        if stream:
            threading.Thread(target=self._body, args=(ctx, state, arguments), daemon=True).start()
            return state
        self._body(ctx, state, arguments, reraise=True)
        for ex in list(ctx.executors):
            try:
                ex.sync()
            except InterpreterError:
                if raise_errors:
                    raise
        return state

    def _body(self, ctx: RunContext, state: ProgramState, arguments: dict[str, Any], reraise: bool = False) -> None:
        try:
            state.ret_value = self.func(state, **arguments)
        except BaseException as e:
            if reraise:
                ctx.end_all()
                raise
            err = InterpreterError(f"program {self.name} raised {type(e).__name__}: {e}")
            err.__cause__ = e
            state._ex.error = state._ex.error or err
            # NOTE: the root stream now skips what it had not run yet, a fork among them: its children must
            # not wait for that fork's snapshot forever.
            ctx.fail_pending(state._ex.error)
        ctx.end_all()

    def run_batch(self, batch_kwargs: list[dict[str, Any] | tuple | list], *, num_threads: int | str = "auto",
                  progress_bar: bool = False, backend: Any = None, generator_style: bool = False,
                  **sampling: Any) -> Any:
        """Run once per item, concurrently: a dict of arguments, or a tuple/list of positional ones; states in
        input order (a generator of them, each yielded once finished, with ``generator_style=True``).

        A failed program does not stop the others: its state's ``error()`` is set and reading its
        text raises. ``num_threads="auto"`` runs up to 64 programs at once.
        """
        be = resolve_backend(backend)
        jobs = [self._split((), {**kw, **sampling}) if isinstance(kw, dict) else self._split(tuple(kw), sampling)
                for kw in batch_kwargs]
        if num_threads == "auto":
            num_threads = max(1, min(64, len(jobs), (os.cpu_count() or 1) * 16))
        if generator_style:
            return self._batch_generator(jobs, int(num_threads), be)
        with ThreadPoolExecutor(max_workers=int(num_threads), thread_name_prefix="sglc-batch") as pool:
            futures = [pool.submit(self._run, a, d, be, False, False) for a, d in jobs]
            if progress_bar:
                from concurrent.futures import as_completed

                from tqdm.auto import tqdm

                for _ in tqdm(as_completed(futures), total=len(futures), desc=self.name):
                    pass
            states = [f.result() for f in futures]
        failed = sum(s.error() is not None for s in states)
        if failed:
            logger.warning("%s: %d of %d programs in the batch failed; see state.error()", self.name, failed,
                           len(states))
        return states

    def _batch_generator(self, jobs: list[tuple[dict[str, Any], dict[str, Any]]], num_threads: int,
                         backend: Backend) -> Iterator[ProgramState]:
        pool = ThreadPoolExecutor(max_workers=max(1, num_threads), thread_name_prefix="sglc-batch")
        try:
            futures = [pool.submit(self._run, a, d, backend, False, False) for a, d in jobs]
            for fut in futures:
                yield fut.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def trace(self, *, backend: Any = None, **kwargs: Any) -> ir.Graph:
        """Trace into an ``ir.Graph``: arguments not given (and without defaults) stay symbolic. ``backend`` is
        accepted for SGLang compatibility: a trace does not depend on it (the backend is chosen at run time)."""
        del backend
        graph = trace_function(self.func, self.name, self.bind_arguments, kwargs)
        from .envs import dump_ir

        dump_ir(graph, "trace")
        return graph

    def run_graph(self, *args: Any, graph: ir.Graph | None = None, stream: bool = False, backend: Any = None,
                  **kwargs: Any) -> ProgramState:
        """Run in graph mode: trace (or take ``graph``), then execute the graph with these arguments."""
        arguments, defaults = self._split(args, kwargs)
        graph = graph if graph is not None else self.trace()
        given = {k: v for k, v in arguments.items() if k in graph.arguments}
        return run_graph(graph, resolve_backend(backend), defaults, given, stream)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``fn(...)`` runs the program; ``fn(s, ...)`` inside another program inlines it on state ``s``."""
        if args and _is_state(args[0]):
            return self.func(args[0], *args[1:], **{**self.bind_arguments, **kwargs})
        return self.run(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<sglc function {self.name}({', '.join(self.arg_names)})>"


def _is_state(obj: Any) -> bool:
    from .tracer import TracingState

    return isinstance(obj, (ProgramState, TracingState))


def function(func: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Decorator: ``@sgl.function`` turns ``def prog(s, ...)`` into an :class:`SglFunction`."""
    if func is None:
        return lambda f: SglFunction(f)
    return SglFunction(func)
