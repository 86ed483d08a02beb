"""Online serving benchmark against a running ``sglc serve`` (HTTP ``/generate`` or gRPC), like SGLang's.

Backends: ``http`` (native ``/generate``), ``openai`` (``/v1/completions``) and ``grpc``. Requests
arrive as a Poisson process at ``--request-rate`` (``inf``: all at once), with random
token-id prompts or shared-prefix groups (the radix cache's case). Every request streams, so we
measure time to first token (TTFT), inter-token latency (ITL) and end-to-end latency (E2E), and
print percentiles and throughput as a table.

    # against a server you started:  sglc serve --port 30000 --grpc-port 30001
    python bench/bench_serving.py --backend http --port 30000 --num-prompts 64 --request-rate 8
    # or let the benchmark start (and stop) one:
    python bench/bench_serving.py --launch-server --backend grpc --dataset shared-prefix
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass
class Result:
    """One request's measurements (seconds)."""

    ok: bool = False
    prompt_len: int = 0
    output_len: int = 0
    ttft: float = 0.0
    e2e: float = 0.0
    itl: list[float] = field(default_factory=list)
    error: str = ""
    _start: float = field(default=0.0, repr=False)
    _last: float = field(default=0.0, repr=False)

    def begin(self) -> None:
        self._start = self._last = time.perf_counter()

    def tokens_arrived(self) -> None:
        """A streamed chunk carried new tokens: the first sets TTFT, later ones add an inter-token gap."""
        now = time.perf_counter()
        if self.ttft == 0.0 and not self.itl:
            self.ttft = now - self._start
        else:
            self.itl.append(now - self._last)
        self._last = now

    def done(self) -> None:
        self.e2e, self.ok = time.perf_counter() - self._start, True


# -- workloads --------------------------------------------------------------------------------------
def random_prompts(n: int, input_len: int, output_len: int, ratio: float, vocab: int,
                   rng: random.Random) -> list[tuple[list[int], int]]:
    """``n`` (prompt ids, output length) pairs; lengths uniform in [len * ratio, len]."""
    out = []
    for _ in range(n):
        length = rng.randint(max(1, int(input_len * ratio)), input_len)
        out.append(([rng.randrange(100, vocab - 100) for _ in range(length)],
                    rng.randint(max(1, int(output_len * ratio)), output_len)))
    return out


def shared_prefix_prompts(n: int, groups: int, prefix_len: int, input_len: int, output_len: int,
                          vocab: int, rng: random.Random) -> list[tuple[list[int], int]]:
    """``groups`` system prompts of ``prefix_len`` tokens, each followed by a unique ``input_len`` question."""
    prefixes = [[rng.randrange(100, vocab - 100) for _ in range(prefix_len)] for _ in range(groups)]
    out = [(prefixes[i % groups] + [rng.randrange(100, vocab - 100) for _ in range(input_len)], output_len)
           for i in range(n)]
    rng.shuffle(out)
    return out


# -- clients ----------------------------------------------------------------------------------------
def _params(output_len: int) -> dict:
    # NOTE: ignore_eos makes every request produce exactly output_len tokens, so runs are comparable.
    return {"max_new_tokens": output_len, "temperature": 0, "ignore_eos": True}


async def _sse_chunks(client: httpx.AsyncClient, path: str, body: dict, res: Result):
    """The JSON chunks of a streamed POST (``data: ...`` lines); an HTTP error goes to ``res.error``."""
    res.begin()
    async with client.stream("POST", path, json=body) as r:
        if r.status_code != 200:
            res.error = f"HTTP {r.status_code}: {(await r.aread()).decode()[:200]}"
            return
        async for line in r.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                yield json.loads(line[6:])


async def http_request(client: httpx.AsyncClient, ids: list[int], output_len: int) -> Result:
    res = Result(prompt_len=len(ids))
    body = {"input_ids": ids, "sampling_params": _params(output_len), "stream": True}
    try:
        async for chunk in _sse_chunks(client, "/generate", body, res):
            if "error" in chunk:
                res.error = str(chunk["error"])
                return res
            n = len(chunk.get("output_ids", []))  # NOTE: cumulative ids (SGLang's stream shape)
            if n > res.output_len:
                res.tokens_arrived()
                res.output_len = n
        if not res.error:
            res.done()
    except (httpx.HTTPError, json.JSONDecodeError) as err:
        res.error = f"{type(err).__name__}: {err}"
    return res


async def openai_request(client: httpx.AsyncClient, ids: list[int], output_len: int) -> Result:
    """``/v1/completions`` with ``stream``; token counts come from the final usage chunk."""
    res = Result(prompt_len=len(ids))
    body = {"model": "default", "prompt": ids, "max_tokens": output_len, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    try:
        async for chunk in _sse_chunks(client, "/v1/completions", body, res):
            if chunk.get("usage"):
                res.output_len = chunk["usage"]["completion_tokens"]
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                res.tokens_arrived()
        if not res.error:
            res.done()
    except (httpx.HTTPError, json.JSONDecodeError) as err:
        res.error = f"{type(err).__name__}: {err}"
    return res


async def grpc_request(stub, metadata, ids: list[int], output_len: int) -> Result:
    import grpc

    from proto import sglc_pb2 as pb

    res = Result(prompt_len=len(ids))
    req = pb.GenerateRequest(input_ids=pb.TokenIds(ids=ids), stream=True,
                             sampling_params=pb.SamplingParams(**_params(output_len)))
    res.begin()
    try:
        async for msg in stub.Generate(req, metadata=metadata):
            if msg.token_ids:
                res.tokens_arrived()
                res.output_len += len(msg.token_ids)
        res.done()
    except grpc.aio.AioRpcError as err:
        res.error = f"{err.code().name}: {err.details()}"
    return res


# -- the run ----------------------------------------------------------------------------------------
async def run(args: argparse.Namespace, base_url: str, grpc_target: str) -> tuple[list[Result], float, dict]:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=max(args.num_prompts, 16))
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=None, limits=limits) as client:
        info = (await client.get("/get_model_info")).json()
        rng = random.Random(args.seed)
        vocab = int(info.get("vocab_size", 32000))
        if args.dataset == "random":
            work = random_prompts(args.num_prompts, args.input_len, args.output_len, args.range_ratio, vocab, rng)
        else:
            work = shared_prefix_prompts(args.num_prompts, args.num_groups, args.shared_prefix_len, args.input_len,
                                         args.output_len, vocab, rng)
        send = await _sender(args, client, grpc_target, headers)
        for ids, _ in random_prompts(args.warmup, 16, 4, 1.0, vocab, random.Random(-1)):  # warm-up, not measured
            await send(ids, 4)
        await client.post("/flush_cache")  # NOTE: every run starts from an empty radix cache
        before = await _metrics(client)
        sem = asyncio.Semaphore(args.max_concurrency or len(work))

        async def one(ids: list[int], out_len: int) -> Result:
            async with sem:
                return await send(ids, out_len)

        tasks = []
        start = time.perf_counter()
        for ids, out_len in work:
            tasks.append(asyncio.ensure_future(one(ids, out_len)))
            if math.isfinite(args.request_rate):
                await asyncio.sleep(rng.expovariate(args.request_rate))
        results = await asyncio.gather(*tasks)
        duration = time.perf_counter() - start
        after = await _metrics(client)
    return results, duration, {k: after.get(k, 0) - before.get(k, 0) for k in after}


async def _metrics(client: httpx.AsyncClient) -> dict[str, float]:
    from runtime.server.metrics import parse

    return parse((await client.get("/metrics")).text)


async def _sender(args: argparse.Namespace, client: httpx.AsyncClient, grpc_target: str, headers: dict):
    if args.backend == "http":
        return lambda ids, n: http_request(client, ids, n)
    if args.backend == "openai":
        return lambda ids, n: openai_request(client, ids, n)
    import grpc

    from proto import sglc_pb2_grpc as pb_grpc

    channel = grpc.aio.insecure_channel(grpc_target)
    stub = pb_grpc.RuntimeStub(channel)
    metadata = [("authorization", headers["Authorization"])] if headers else None
    return lambda ids, n: grpc_request(stub, metadata, ids, n)


# -- report -----------------------------------------------------------------------------------------
def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(p / 100 * len(xs)) - 1))]


def report(args: argparse.Namespace, results: list[Result], duration: float, delta: dict) -> str:
    """The results as a Markdown table (also fine in a terminal)."""
    ok = [r for r in results if r.ok]
    rows = [("backend / dataset", f"{args.backend} / {args.dataset}"),
            ("request rate (req/s)", f"{args.request_rate:g}"),
            ("successful / failed requests", f"{len(ok)} / {len(results) - len(ok)}"),
            ("duration (s)", f"{duration:.2f}"),
            ("request throughput (req/s)", f"{len(ok) / duration:.2f}"),
            ("input tokens / output tokens", f"{sum(r.prompt_len for r in ok)} / {sum(r.output_len for r in ok)}"),
            ("input throughput (tok/s)", f"{sum(r.prompt_len for r in ok) / duration:.1f}"),
            ("output throughput (tok/s)", f"{sum(r.output_len for r in ok) / duration:.1f}")]
    if delta.get("prompt_tokens_total"):
        rows.append(("radix cache hit rate", f"{delta.get('cached_tokens_total', 0) / delta['prompt_tokens_total']:.1%}"))
    for name, xs in (("TTFT", [r.ttft for r in ok]), ("ITL", [x for r in ok for x in r.itl]),
                     ("E2E", [r.e2e for r in ok])):
        ms = [x * 1000 for x in xs]
        mean = statistics.fmean(ms) if ms else float("nan")
        rows.append((f"{name} ms (mean / p50 / p90 / p99)",
                     f"{mean:.1f} / {_pct(ms, 50):.1f} / {_pct(ms, 90):.1f} / {_pct(ms, 99):.1f}"))
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'metric':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {k:<{width}} | {v} |" for k, v in rows]
    errors = {r.error for r in results if not r.ok}
    if errors:
        lines.append(f"\nerrors: {sorted(errors)[:3]}")
    return "\n".join(lines)


# -- optional server launch -------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_server(args: argparse.Namespace) -> subprocess.Popen:
    """Start ``python -m sglc serve`` on free ports (sets args.port/grpc_port) and wait for /health."""
    args.port, args.grpc_port = _free_port(), _free_port()
    cmd = [sys.executable, "-m", "sglc", "serve", "--port", str(args.port), "--grpc-port", str(args.grpc_port),
           "--log-level", "warning", *shlex.split(args.server_args)]
    if args.api_key:
        cmd += ["--api-key", args.api_key]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}: {shlex.join(cmd)}")
        try:
            if httpx.get(f"http://127.0.0.1:{args.port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not become healthy in 600 s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["http", "grpc", "openai"], default="http",
                   help="http: native /generate; openai: /v1/completions; grpc: the Runtime service")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=30000, help="HTTP port (also used for /metrics with gRPC)")
    p.add_argument("--grpc-port", type=int, default=30001)
    p.add_argument("--api-key")
    p.add_argument("--launch-server", action="store_true", help="start `sglc serve` on free ports and stop it after")
    p.add_argument("--server-args", default="", help="extra `sglc serve` flags with --launch-server")
    p.add_argument("--dataset", choices=["random", "shared-prefix"], default="random")
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--request-rate", type=float, default=float("inf"), help="Poisson rate in req/s (inf: burst)")
    p.add_argument("--max-concurrency", type=int, help="cap on requests in flight")
    p.add_argument("--input-len", type=int, default=128, help="prompt tokens (random) / question tokens")
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument("--range-ratio", type=float, default=0.5, help="random lengths are uniform in [len*ratio, len]")
    p.add_argument("--num-groups", type=int, default=4, help="shared-prefix: distinct prefixes")
    p.add_argument("--shared-prefix-len", type=int, default=512)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-json", help="also write the raw numbers here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    proc = launch_server(args) if args.launch_server else None
    try:
        results, duration, delta = asyncio.run(
            run(args, f"http://{args.host}:{args.port}", f"{args.host}:{args.grpc_port}"))
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    print(report(args, results, duration, delta))
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(
            {"args": {k: v for k, v in vars(args).items() if k != "api_key"}, "duration_s": duration,
             "results": [r.__dict__ for r in results]}, indent=1, default=str))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
