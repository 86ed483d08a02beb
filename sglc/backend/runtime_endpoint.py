"""Backend for a remote sglc runtime (gRPC or SGLang-native HTTP), and ``Runtime`` that launches one.

``RuntimeEndpoint("grpc://host:port")`` (or ``"host:port"``) talks to ``sglc serve --grpc-port``:
``Generate`` for gen (streamed when the program runs with ``stream=True``), ``Score`` for select
(all choices in one call, prefix shared), ``Warm``, ``FlushCache`` and ``GetModelInfo`` (whose Jinja
chat template sets the role text).
"""
from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from .. import choices as _choices
from ..chat_template import ChatTemplate, from_jinja, get_chat_template, resolve_template
from ..sampling import split_params
from .base import Backend, GenResult, Prompt, SelectResult
from .engine import DTYPE_REGEX

logger = logging.getLogger(__name__)
_MAX_MSG = 64 << 20


class GrpcTransport:
    """The runtime service over gRPC (``proto/sglc.proto``)."""

    def __init__(self, target: str, api_key: str | None, timeout: float | None) -> None:
        import grpc

        from proto import sglc_pb2, sglc_pb2_grpc

        self._grpc, self._pb = grpc, sglc_pb2
        self.target = target.removeprefix("grpc://").rstrip("/")
        self.timeout = timeout
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self.channel = grpc.insecure_channel(self.target, options=[("grpc.max_receive_message_length", _MAX_MSG),
                                                                   ("grpc.max_send_message_length", _MAX_MSG)])
        self.stub = sglc_pb2_grpc.RuntimeStub(self.channel)

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, metadata=self.metadata, timeout=self.timeout)
        except self._grpc.RpcError as e:
            raise RuntimeError(f"sglc runtime at {self.target}: {e.code().name}: {e.details()}") from None

    def model_info(self) -> dict[str, Any]:
        info = self._call(self.stub.GetModelInfo, self._pb.ModelInfoRequest())
        out = json.loads(info.json) if info.json else {"model_path": info.model_path}
        return {**out, "chat_template": info.chat_template or out.get("chat_template")}

    def _request(self, text: str, sampling: dict[str, Any], extra: dict[str, Any], stream: bool) -> Any:
        pb = self._pb
        known = pb.SamplingParams.DESCRIPTOR.fields_by_name
        sp = pb.SamplingParams(**{k: v for k, v in sampling.items() if k in known and v is not None})
        req = pb.GenerateRequest(text=text, sampling_params=sp, stream=stream,
                                 return_logprob=bool(extra.get("return_logprob")),
                                 top_logprobs_num=int(extra.get("top_logprobs_num") or 0),
                                 return_text_in_logprobs=bool(extra.get("return_text_in_logprobs")))
        if extra.get("logprob_start_len") is not None:
            req.logprob_start_len = int(extra["logprob_start_len"])
        return req

    @staticmethod
    def _meta(resp: Any) -> dict[str, Any]:
        m = resp.meta_info
        if m.json:
            return json.loads(m.json)
        return {"id": m.id, "prompt_tokens": m.prompt_tokens, "completion_tokens": m.completion_tokens,
                "cached_tokens": m.cached_tokens, "finish_reason": m.finish_reason}

    def generate(self, text: str, sampling: dict[str, Any], extra: dict[str, Any]) -> GenResult:
        out, meta = "", {}
        for resp in self._call(self.stub.Generate, self._request(text, sampling, extra, stream=False)):
            if resp.index == 0:
                out, meta = resp.text, (self._meta(resp) if resp.finished else meta)
        return GenResult(out, meta)

    def generate_stream(self, text: str, sampling: dict[str, Any],
                        extra: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any] | None]]:
        meta: dict[str, Any] = {}
        for resp in self._call(self.stub.Generate, self._request(text, sampling, extra, stream=True)):
            if resp.index != 0:
                continue
            yield resp.text, None
            if resp.finished:
                meta = self._meta(resp)
        yield "", meta

    def score(self, prefix: str, continuations: list[str]) -> list[dict[str, Any]]:
        resp = self._call(self.stub.Score, self._pb.ScoreRequest(prefix=prefix, continuations=continuations))
        return [{"logprob_sum": c.logprob_sum, "normalized_logprob": c.normalized_logprob,
                 "num_tokens": c.num_tokens, "token_logprobs": list(c.token_logprobs)} for c in resp.choices]

    def warm(self, prefix: str, expect: int = 0) -> None:
        self._call(self.stub.Warm, self._pb.WarmRequest(prefix=prefix, expect=expect))

    def flush_cache(self) -> bool:
        return bool(self._call(self.stub.FlushCache, self._pb.FlushCacheRequest()).success)

    def close(self) -> None:
        self.channel.close()


class RuntimeEndpoint(Backend):
    """A client of a remote sglc runtime: ``"grpc://host:port"`` (or ``"host:port"``) speaks the gRPC
    service; ``"http://host:port"`` speaks SGLang's native HTTP API (``/generate``), as SGLang's
    ``RuntimeEndpoint`` does (select then scores through prompt logprobs)."""

    def __init__(self, base_url: str, api_key: str | None = None, chat_template: str | ChatTemplate | None = None,
                 timeout: float | None = None) -> None:
        if base_url.startswith(("http://", "https://")):
            from .http_transport import HttpTransport

            self.transport: Any = HttpTransport(base_url, api_key, timeout)
        else:
            self.transport = GrpcTransport(base_url, api_key, timeout)
        self.base_url = base_url
        self.model_info = self.transport.model_info()
        remote = self.model_info.get("chat_template")
        self.chat_template = resolve_template(
            chat_template, lambda: from_jinja(remote, "runtime") if remote else get_chat_template("chatml"))

    @staticmethod
    def _split(params: dict[str, Any], dtype: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        sampling, extra = split_params(params)
        if dtype in DTYPE_REGEX and not any(sampling.get(k) for k in ("regex", "json_schema", "ebnf")):
            sampling["regex"] = DTYPE_REGEX[dtype]
        return sampling, extra

    def generate(self, prompt: Prompt, params: dict[str, Any], dtype: str | None = None) -> GenResult:
        return self.transport.generate(prompt.text, *self._split(params, dtype))

    def generate_stream(self, prompt: Prompt, params: dict[str, Any],
                        dtype: str | None = None) -> Iterator[tuple[str, dict[str, Any] | None]]:
        return self.transport.generate_stream(prompt.text, *self._split(params, dtype))

    def select(self, prompt: Prompt, choices: tuple[str, ...], choices_method: str,
               temperature: float = 0.0) -> SelectResult:
        best, meta = _choices.select_by_scores(prompt.text, choices, choices_method, self.transport.score)
        return SelectResult(choices[best], meta)

    def warm(self, prefix: str, expect: int = 0) -> None:
        self.transport.warm(prefix, expect)

    def flush_cache(self) -> bool:
        return self.transport.flush_cache()

    def get_server_info(self) -> dict[str, Any]:
        return {"backend": "runtime", "url": self.base_url, **self.model_info}

    def shutdown(self) -> None:
        self.transport.close()


class Runtime(RuntimeEndpoint):
    """Launch ``sglc serve`` in a subprocess and connect to its gRPC port (SGLang's ``sgl.Runtime``).

    ``Runtime(model_path=None, **server_args)``: keyword arguments become ``sglc serve`` flags
    (``max_total_tokens=4096`` -> ``--max-total-tokens 4096``; ``True`` -> a bare flag).
    """

    def __init__(self, model_path: str | None = None, start_timeout: float = 300.0, **server_args: Any) -> None:
        http_port, grpc_port = _free_port(), _free_port()
        cmd = [sys.executable, "-m", "sglc", "serve", "--host", "127.0.0.1", "--port", str(http_port),
               "--grpc-port", str(grpc_port)]
        if model_path:
            cmd += ["--model-path", model_path]
        for key, value in server_args.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                cmd.append(flag)
            elif value not in (None, False):
                cmd += [flag, str(value)]
        logger.info("starting %s", " ".join(cmd))
        self.process = subprocess.Popen(cmd)
        self.url = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + start_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"sglc serve exited with status {self.process.returncode}; see its output above")
            try:
                super().__init__(f"127.0.0.1:{grpc_port}", timeout=None)
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    self.process.terminate()
                    raise
                time.sleep(0.5)

    def shutdown(self) -> None:
        super().shutdown()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
