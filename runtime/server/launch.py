"""``sglc serve``: build one Engine, serve it over HTTP (and gRPC), drain on SIGTERM/SIGINT.

Shutdown: the first SIGTERM/SIGINT marks the server unhealthy (HTTP /health 503, gRPC health
NOT_SERVING), stops accepting connections and lets in-flight requests finish for up to
``--shutdown-timeout`` seconds; requests still running then are cancelled, which aborts them in
the engine. Then the engine shuts down and the process exits with status 0.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from runtime.errors import EngineError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerArgs:
    """Options of ``sglc serve`` (server-side ones here; engine ones map onto RuntimeConfig)."""

    model_path: str | None = None
    host: str = "127.0.0.1"
    port: int = 30000
    grpc_port: int | None = None
    api_key: str | None = None
    chat_template: str | None = None
    served_model_name: str | None = None
    shutdown_timeout: float = 10.0
    log_level: str = "info"
    # Engine (RuntimeConfig) options; None keeps the engine's default.
    tp: int = 1
    dp: int = 1
    dtype: str = "auto"
    device: str = "auto"
    mem_fraction_static: float | None = None
    quantization: str | None = None
    disable_radix_cache: bool = False
    attention_backend: str | None = None
    max_running_requests: int | None = None
    chunked_prefill_size: int | None = None
    max_prefill_tokens: int | None = None
    max_total_tokens: int | None = None
    context_length: int | None = None
    load_format: str | None = None
    random_seed: int | None = None
    overlap_schedule: str | None = None
    mixed_chunk: str | None = None
    skip_tokenizer_init: bool = False
    disable_cuda_graph: bool = False
    cuda_graph_max_bs: int | None = None
    disable_cascade_attention: bool = False
    disable_warmup: bool = False
    kv_cache_dtype: str | None = None


def engine_options(args: ServerArgs) -> dict[str, Any]:
    """The ``Engine(**options)`` keywords for ``args`` (unset ones left to the engine)."""
    opts: dict[str, Any] = {
        "model_path": args.model_path, "dtype": args.dtype, "device": args.device, "tp_size": args.tp,
        "dp_size": args.dp, "mem_fraction_static": args.mem_fraction_static, "quantization": args.quantization,
        "disable_radix_cache": args.disable_radix_cache, "attention_backend": args.attention_backend,
        "max_running_requests": args.max_running_requests, "chunked_prefill_size": args.chunked_prefill_size,
        "max_prefill_tokens": args.max_prefill_tokens,
        "max_total_tokens": args.max_total_tokens, "context_length": args.context_length,
        "load_format": args.load_format, "random_seed": args.random_seed,
        "overlap_schedule": args.overlap_schedule, "mixed_chunk": args.mixed_chunk,
        "log_level": args.log_level.lower(),
        "skip_tokenizer_init": args.skip_tokenizer_init, "disable_cuda_graph": args.disable_cuda_graph,
        "disable_cascade_attention": args.disable_cascade_attention, "disable_warmup": args.disable_warmup,
        "kv_cache_dtype": args.kv_cache_dtype, "cuda_graph_max_bs": args.cuda_graph_max_bs,
    }
    flags = ("disable_radix_cache", "skip_tokenizer_init", "disable_cuda_graph", "disable_cascade_attention",
             "disable_warmup")
    return {k: v for k, v in opts.items() if v is not None and not (k in flags and not v)}


def check_args(args: ServerArgs) -> None:
    """Fail fast, before loading any weights, on options the runtime cannot honor (EngineError)."""
    from runtime.config import RuntimeConfig

    if args.model_path is not None and not Path(args.model_path).expanduser().exists():
        raise EngineError(f"--model-path {args.model_path!r} does not exist (a HF directory or a .gguf file)")
    if args.grpc_port is not None and args.grpc_port == args.port:
        raise EngineError(f"--grpc-port must differ from --port ({args.port})")
    if args.tp != 1:
        raise EngineError(f"--tp {args.tp}: tensor parallelism is not implemented yet; use --tp 1")
    if args.dp != 1:
        raise EngineError(f"--dp {args.dp}: data parallelism is not implemented yet; use --dp 1")
    if args.quantization:
        raise EngineError(f"--quantization {args.quantization}: quantization is not implemented yet; "
                          "omit the flag (GGUF weights are dequantized at load)")
    if args.shutdown_timeout < 0:
        raise EngineError("--shutdown-timeout must be >= 0")
    RuntimeConfig.from_kwargs(**engine_options(args))  # raises EngineError naming the option
    for flag, port in (("--port", args.port), ("--grpc-port", args.grpc_port)):
        if port is not None:
            _check_port_free(flag, args.host, port)
    if args.device.startswith("cuda"):
        from runtime.config import resolve_device

        resolve_device(args.device)  # EngineError when CUDA is absent


def _check_port_free(flag: str, host: str, port: int) -> None:
    """Fail before loading the model when a port is taken (uvicorn/gRPC would only notice after)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            raise EngineError(f"{flag} {port}: cannot listen on {host}:{port} ({err.strerror}); "
                              "pick a free port") from err


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(args: ServerArgs) -> int:
    """Run the servers until SIGTERM/SIGINT; returns the process exit status."""
    setup_logging(args.log_level)
    check_args(args)
    return asyncio.run(_serve(args))


def _served_name(args: ServerArgs) -> str:
    if args.served_model_name:
        return args.served_model_name
    if args.model_path:
        return Path(args.model_path).name.removesuffix(".gguf")
    return "SmolLM2-135M-Instruct"


async def _serve(args: ServerArgs) -> int:
    from runtime.engine import Engine

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # NOTE: before loading, so a signal during load exits cleanly
        loop.add_signal_handler(sig, stop.set)
    logger.info("loading the engine (%s)", args.model_path or "embedded SmolLM2-135M-Instruct")
    engine = await asyncio.to_thread(lambda: Engine(**engine_options(args)))
    try:
        if not stop.is_set():
            await _serve_engine(args, engine, stop)
    finally:
        await asyncio.to_thread(engine.shutdown)
    return 0


async def _serve_engine(args: ServerArgs, engine: Any, stop: asyncio.Event) -> None:
    """Serve ``engine`` over HTTP (and gRPC) until ``stop`` is set, then drain."""
    from . import chat_template as templates
    from .grpc_server import set_not_serving, start_grpc_server
    from .http_server import ServerState, create_app

    template = templates.resolve(args.chat_template, getattr(engine, "tokenizer", None))
    state = ServerState(engine=engine, api_key=args.api_key, chat_template=template,
                        served_model_name=_served_name(args))
    grpc_server = None
    if args.grpc_port is not None:
        grpc_server, _ = await start_grpc_server(engine, args.host, args.grpc_port, args.api_key, template)
    config = uvicorn.Config(create_app(state), host=args.host, port=args.port, log_level=args.log_level.lower(),
                            timeout_graceful_shutdown=max(1, int(args.shutdown_timeout)), access_log=False)
    http = _Server(config)
    http_task = asyncio.ensure_future(http.serve())
    logger.info("serving HTTP on http://%s:%d", args.host, args.port)
    await asyncio.wait([http_task, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    if http_task.done() and not stop.is_set():
        if grpc_server is not None:
            await grpc_server.stop(0)
        http_task.result()  # re-raise a startup failure (e.g. the port is taken)
        raise EngineError(f"the HTTP server on port {args.port} stopped unexpectedly")
    logger.info("shutting down: draining in-flight requests (up to %.0f s)", args.shutdown_timeout)
    state.draining = True
    if grpc_server is not None:
        await set_not_serving(grpc_server)
    http.should_exit = True
    await asyncio.gather(http_task, grpc_server.stop(args.shutdown_timeout) if grpc_server else _noop())
    logger.info("all servers stopped")


async def _noop() -> None:
    return None


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling: we own SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # NOTE: uvicorn's re-raises the signal after exit
        yield


def _port(text: str) -> int:
    """An argparse type: a TCP port number (argparse reports the error with the command's usage)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``sglc serve`` flags (SGLang's ``launch_server`` names)."""
    d = ServerArgs()
    g = p.add_argument_group("server")
    g.add_argument("--model-path", help="HF model directory or .gguf file (default: the embedded "
                   "SmolLM2-135M-Instruct)")
    g.add_argument("--host", default=d.host, help="address to bind (default: %(default)s)")
    g.add_argument("--port", type=_port, default=d.port, help="HTTP port (default: %(default)s)")
    g.add_argument("--grpc-port", type=_port, help="also serve the gRPC Runtime service on this port")
    g.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (HTTP) / metadata (gRPC)")
    g.add_argument("--chat-template", help="chat template: a built-in name (chatml, llama-3, plain) or a "
                   "Jinja file (default: the tokenizer's)")
    g.add_argument("--served-model-name", help="model id reported by /v1/models")
    g.add_argument("--shutdown-timeout", type=float, default=d.shutdown_timeout,
                   help="seconds to let in-flight requests finish on SIGTERM before aborting them")
    g.add_argument("--log-level", default=d.log_level, choices=["debug", "info", "warning", "error"])
    e = p.add_argument_group("engine")
    e.add_argument("--tp", "--tp-size", dest="tp", type=int, default=1, help="tensor parallel size (only 1 "
                   "is implemented)")
    e.add_argument("--dp", "--dp-size", dest="dp", type=int, default=1, help="data parallel size (only 1 "
                   "is implemented)")
    e.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    e.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    e.add_argument("--mem-fraction-static", type=float, help="GPU memory fraction for weights + KV pool")
    e.add_argument("--quantization", help="weight quantization (not implemented yet: fails if given)")
    e.add_argument("--disable-radix-cache", action="store_true", help="no prefix caching")
    e.add_argument("--attention-backend", choices=["auto", "torch", "triton", "flashinfer"],
                   help="attention kernels: auto = triton on CUDA, torch on the CPU; flashinfer needs the "
                        "`flashinfer` package and a 16-bit model and KV cache; torch is the reference")
    e.add_argument("--max-running-requests", type=int,
                   help="cap on the running batch (default: CPU 128; GPU 1024 where the KV pool holds 768 tokens "
                        "a request for that many, else 512)")
    e.add_argument("--chunked-prefill-size", type=int, help="max prompt tokens prefilled per step")
    e.add_argument("--max-prefill-tokens", type=int, help="max prompt tokens of all requests prefilled per step")
    e.add_argument("--max-total-tokens", type=int, help="KV pool size in tokens (CPU budget)")
    e.add_argument("--context-length", type=int, help="override the model's context length")
    e.add_argument("--load-format", choices=["auto", "dummy"], help="dummy: random weights (benchmarks)")
    e.add_argument("--random-seed", type=int, help="engine seed")
    e.add_argument("--skip-tokenizer-init", action="store_true",
                   help="no tokenizer (e.g. dummy weights for benchmarks): requests must pass token ids")
    e.add_argument("--disable-cuda-graph", action="store_true", help="run decode eagerly (no CUDA graphs)")
    e.add_argument("--cuda-graph-max-bs", type=int,
                   help="largest decode batch captured in a CUDA graph; larger ones run eagerly (default: the "
                        "running cap, at most 1024)")
    e.add_argument("--kv-cache-dtype", choices=["auto", "fp8_e4m3"],
                   help="KV cache element type: auto (the model's dtype) or fp8_e4m3 (half the bytes per token: "
                   "a pool twice as large and half the K/V read per decode step; scale 1, values saturate at "
                   "+-448; Triton or torch attention backend, GPUs of compute capability 8.9+)")
    e.add_argument("--disable-warmup", action="store_true",
                   help="skip the start-up forward passes (GPU) that compile kernels and reserve activation "
                   "memory for the largest prefill before the first request")
    e.add_argument("--disable-cascade-attention", action="store_true",
                   help="decode rows sharing a cached prefix each read it (default: once per chunk of rows, "
                   "Triton backend)")
    e.add_argument("--overlap-schedule", choices=["auto", "on", "off"],
                   help="queue step N+1 on the GPU before step N's tokens are read back (auto: on for CUDA)")
    e.add_argument("--mixed-chunk", choices=["auto", "on", "off"],
                   help="running requests' decode rows ride along in prefill passes (auto: on for CUDA)")


def args_from_namespace(ns: argparse.Namespace) -> ServerArgs:
    names = {f.name for f in dataclasses.fields(ServerArgs)}
    return ServerArgs(**{k: v for k, v in vars(ns).items() if k in names})
