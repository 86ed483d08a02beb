"""SGLang's native HTTP API (``/generate``, ``/get_model_info``, ``/flush_cache``) as a RuntimeEndpoint transport.

Scoring for ``select`` follows SGLang's RuntimeEndpoint: one ``/generate`` call with
``max_new_tokens=0`` measures the prefix length in tokens, a second one sends every
``prefix + choice`` as a batch with ``return_logprob`` from the prefix's last token (token healing: a
choice may absorb the prefix's trailing space into its first token).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from .base import GenResult


class HttpTransport:
    """A small client of ``sglc serve``'s (or SGLang's) native HTTP routes."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float | None) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self.pins = True   # until a server refuses the pin_uses sampling parameter

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        resp = self.client.post(path, json=body)
        if resp.status_code != 200:
            raise RuntimeError(f"sglc runtime at {self.base_url}{path}: HTTP {resp.status_code}: {resp.text[:500]}")
        return resp.json()

    def model_info(self) -> dict[str, Any]:
        resp = self.client.get("/get_model_info")
        if resp.status_code != 200:
            raise RuntimeError(f"sglc runtime at {self.base_url}: HTTP {resp.status_code}: {resp.text[:500]}")
        return resp.json()

    @staticmethod
    def _body(text: Any, sampling: dict[str, Any], extra: dict[str, Any], stream: bool = False) -> dict[str, Any]:
        return {"text": text, "sampling_params": sampling, "stream": stream, **extra}

    def generate(self, text: str, sampling: dict[str, Any], extra: dict[str, Any]) -> GenResult:
        out = self._post("/generate", self._body(text, sampling, extra))
        out = out[0] if isinstance(out, list) else out
        return GenResult(out["text"], out.get("meta_info", {}))

    def generate_stream(self, text: str, sampling: dict[str, Any],
                        extra: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any] | None]]:
        sent, meta = "", {}
        with self.client.stream("POST", "/generate", json=self._body(text, sampling, extra, True)) as resp:
            if resp.status_code != 200:
                raise RuntimeError(f"sglc runtime at {self.base_url}: HTTP {resp.status_code}")
            for line in resp.iter_lines():
                if not line.startswith("data:") or line.strip() == "data: [DONE]":
                    continue
                event = json.loads(line[5:])
                if "error" in event:
                    raise RuntimeError(f"sglc runtime at {self.base_url}: {event['error'].get('message')}")
                if event.get("index", 0) != 0:
                    continue
                # NOTE: native SSE events carry the cumulative text; yield only what is new.
                new = event["text"][len(sent):]
                sent = event["text"]
                if new:
                    yield new, None
                if event.get("finished"):
                    meta = event.get("meta_info", {})
        yield "", meta

    def score(self, prefix: str, continuations: list[str]) -> list[dict[str, Any]]:
        plen = self._post("/generate", self._body(prefix, {"max_new_tokens": 0}, {}))["meta_info"]["prompt_tokens"]
        # NOTE: from the prefix's last token, with token texts: "... is " + "Paris" tokenizes to "... is" +
        # " Paris" (the space joins the choice's first token), so scoring from ``plen`` would score nothing and
        # every such choice would tie at 0. As SGLang's RuntimeEndpoint heals the token: the first row is kept
        # when it is not the prefix's own last token.
        outs = self._post("/generate", self._body([prefix + c for c in continuations], {"max_new_tokens": 0},
                                                  {"return_logprob": True, "logprob_start_len": max(plen - 1, 0),
                                                   "return_text_in_logprobs": True}))
        scores = []
        for out in outs:
            rows = out["meta_info"].get("input_token_logprobs", [])
            if plen and rows and len(rows[0]) > 2 and prefix.endswith(rows[0][2]):
                rows = rows[1:]   # no healing: the prefix's last token is unchanged
            lps = [float(row[0]) for row in rows if row[0] is not None]
            total = sum(lps)
            scores.append({"logprob_sum": total, "normalized_logprob": total / max(1, len(lps)),
                           "num_tokens": len(lps), "token_logprobs": lps})
        return scores

    def warm(self, prefix: str, expect: int = 0) -> None:
        sampling: dict[str, Any] = {"max_new_tokens": 0}
        if expect and self.pins:
            sampling["pin_uses"] = expect   # NOTE: sglc's pin hint (SamplingParams.pin_uses); SGLang has none
        resp = self.client.post("/generate", json=self._body(prefix, sampling, {}))
        if resp.status_code in (400, 422) and "pin_uses" in sampling:
            self.pins = False   # a server without pins: warm without the hint from now on
            self.warm(prefix)
        elif resp.status_code != 200:
            raise RuntimeError(f"sglc runtime at {self.base_url}/generate: HTTP {resp.status_code}: {resp.text[:500]}")

    def flush_cache(self) -> bool:
        return self.client.post("/flush_cache").status_code == 200

    def close(self) -> None:
        self.client.close()
