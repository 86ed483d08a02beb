"""Adapter pieces that need no server or model: protocol mapping, chat templates, metrics text."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from proto import sglc_pb2 as pb
from runtime.errors import EngineError
from runtime.server import chat_template, metrics, openai_protocol, proto_convert


class _Tok:
    """A stand-in tokenizer: renders with Jinja like transformers and "tokenizes" by characters."""

    chat_template = None

    def apply_chat_template(self, messages, chat_template, tokenize, add_generation_prompt):
        import jinja2

        return jinja2.Template(chat_template).render(messages=messages, add_generation_prompt=add_generation_prompt)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        assert not add_special_tokens  # the template already holds the special tokens
        return [ord(c) for c in text]


def test_proto_sampling_params_keep_only_set_fields() -> None:
    sp = pb.SamplingParams(temperature=0.9, max_new_tokens=5, stop=["\n"], json_schema="{}")
    assert proto_convert.sampling_params_to_dict(sp) == {
        "temperature": 0.9, "max_new_tokens": 5, "stop": ["\n"], "json_schema": "{}"}  # 0.9, not 0.8999999762
    assert proto_convert.sampling_params_to_dict(pb.SamplingParams()) == {}


def test_proto_meta_info_maps_finish_reasons() -> None:
    meta = {"id": "r", "prompt_tokens": 3, "completion_tokens": 2, "finish_reason": {"type": "stop", "matched": 7},
            "output_token_logprobs": [[-0.1, 5], [-0.2, 7]], "output_top_logprobs": [[[-0.1, 5]], [[-0.2, 7]]]}
    msg = proto_convert.meta_info(meta)
    assert msg.finish_reason == "stop" and msg.matched_stop_token_id == 7 and not msg.matched_stop
    assert [t.token_id for t in msg.output_token_logprobs] == [5, 7]
    assert msg.output_token_logprobs[1].top[0].token_id == 7
    assert json.loads(msg.json)["prompt_tokens"] == 3
    stream_msg = proto_convert.generate_response("r", {"output_ids": [7], "finished": False, "meta_info": meta},
                                                 stream=True, sent_logprobs=1)
    assert [t.token_id for t in stream_msg.logprobs] == [7] and not stream_msg.HasField("meta_info")


def test_openai_response_format_maps_to_json_schema() -> None:
    req = openai_protocol.ChatCompletionRequest(messages=[{"role": "user", "content": "x"}],
                                                response_format={"type": "json_object"}, stop="END", max_tokens=3)
    params = openai_protocol.sampling_params(req, req.max_tokens)
    assert json.loads(params["json_schema"]) == {"type": "object"}
    assert params["stop"] == "END" and params["max_new_tokens"] == 3
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    req = openai_protocol.ChatCompletionRequest(
        messages=[{"role": "user", "content": "x"}],
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}})
    assert json.loads(openai_protocol.sampling_params(req, None)["json_schema"]) == schema


@pytest.mark.parametrize("extra,field", [({"logit_bias": {"1": 2.0}}, "logit_bias"), ({"temperature": -1}, "temperature"),
                                         ({"regex": "a", "response_format": {"type": "json_object"}}, "response_format")])
def test_openai_bad_params_name_the_field(extra: dict, field: str) -> None:
    req = openai_protocol.CompletionRequest(prompt="x", **extra)
    with pytest.raises(EngineError, match=field):
        openai_protocol.sampling_params(req, 4)


def test_usage_counts_prompt_once_per_prompt() -> None:
    metas = [{"prompt_tokens": 4, "completion_tokens": 2, "cached_tokens": 1}] * 3  # one prompt, n = 3
    assert openai_protocol.usage(metas, 3) == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10,
                                               "prompt_tokens_details": {"cached_tokens": 1}}


def test_chat_template_names_files_and_errors(tmp_path: Path) -> None:
    tok = _Tok()
    assert chat_template.resolve(None, tok) == chat_template.BUILTIN["chatml"]  # no own template → ChatML
    tok.chat_template = "{{ messages[0]['content'] }}"
    assert chat_template.resolve(None, tok) == tok.chat_template
    assert chat_template.resolve("llama-3", tok) == chat_template.BUILTIN["llama-3"]
    f = tmp_path / "t.jinja"
    f.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% endfor %}")
    ids = chat_template.render_ids(tok, chat_template.resolve(str(f), tok),
                                   [{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    assert "".join(map(chr, ids)) == "[user] hi"
    with pytest.raises(EngineError, match="neither a built-in"):
        chat_template.resolve("no-such-template", tok)
    with pytest.raises(EngineError, match=r"messages\[0\].content"):
        chat_template.render_ids(tok, "x", [{"role": "user", "content": [{"type": "image_url"}]}])


def test_metrics_text_round_trips() -> None:
    m = {"num_requests_total": 3, "cache_hit_rate": 0.25, "kv_total_tokens": 100, "kv_used_tokens": 10,
         "note": "not a number"}
    text = metrics.render(m, metrics.kv_usage(m))
    assert "# TYPE sglc_num_requests_total counter" in text and "# TYPE sglc_cache_hit_rate gauge" in text
    assert metrics.parse(text) == {"num_requests_total": 3, "cache_hit_rate": 0.25, "kv_total_tokens": 100,
                                   "kv_used_tokens": 10, "kv_usage": 0.1}


@pytest.mark.parametrize("err,kind", [
    (EngineError("invalid sampling parameter top_p=2: must be in (0, 1]"), "invalid"),
    (EngineError("ebnf constraints are not supported yet"), "unsupported"),
    (EngineError("the engine is not running (the sglc worker died)"), "unavailable"),
    (RuntimeError("boom"), "internal"),
])
def test_error_classes_map_to_status(err: Exception, kind: str) -> None:
    from runtime.server.engine_calls import classify
    from runtime.server.http_server import http_error

    assert classify(err) == kind
    status, body = http_error(err)
    assert status == {"invalid": 400, "unsupported": 400, "unavailable": 503, "internal": 500}[kind]
    assert body["error"]["message"] == str(err)


def test_serve_engine_flags_reach_the_engine_options() -> None:
    """`sglc serve` engine flags become Engine keywords; unset ones stay the engine's defaults."""
    import argparse

    from runtime.config import RuntimeConfig
    from runtime.server.launch import add_arguments, args_from_namespace, engine_options

    p = argparse.ArgumentParser()
    add_arguments(p)
    ns = p.parse_args(["--overlap-schedule", "off", "--mixed-chunk", "on", "--max-running-requests", "8", "--skip-tokenizer-init",
                       "--disable-cascade-attention", "--disable-cuda-graph", "--disable-warmup",
                       "--kv-cache-dtype", "fp8_e4m3", "--cuda-graph-max-bs", "1024"])
    opts = engine_options(args_from_namespace(ns))
    assert opts["overlap_schedule"] == "off" and opts["max_running_requests"] == 8
    assert opts["mixed_chunk"] == "on"
    assert opts["skip_tokenizer_init"] is True
    assert opts["disable_cascade_attention"] is True and opts["disable_cuda_graph"] is True
    assert opts["disable_warmup"] is True and opts["kv_cache_dtype"] == "fp8_e4m3"
    assert opts["cuda_graph_max_bs"] == 1024
    RuntimeConfig.from_kwargs(**opts)   # every option is a real RuntimeConfig field
    defaults = engine_options(args_from_namespace(p.parse_args([])))
    assert "overlap_schedule" not in defaults and "skip_tokenizer_init" not in defaults
    assert "mixed_chunk" not in defaults
    assert "disable_cascade_attention" not in defaults and "cuda_graph_max_bs" not in defaults
    with pytest.raises(SystemExit):
        p.parse_args(["--overlap-schedule", "sometimes"])
    with pytest.raises(SystemExit):
        p.parse_args(["--mixed-chunk", "sometimes"])


def test_logprobs_of_tokens_that_split_a_character() -> None:
    """An emoji or a CJK character is several byte tokens: each one's ``bytes`` are its raw bytes (they used to be
    U+FFFD's for every piece, so the bytes joined to '\ufffd\ufffd...'), its token is OpenAI's ``bytes:\\x..`` and
    the completions ``text_offset`` stays inside the text."""
    from runtime.tokenizer import load_tokenizer

    tok = load_tokenizer()
    text = "Emojis: 😀🎉 café 日本語"
    rows = [[-0.5, i] for i in tok.encode(text, add_special_tokens=False)]
    content = openai_protocol.chat_logprobs(tok, rows, [[[-0.5, r[1]]] for r in rows])["content"]
    assert bytes(b for e in content for b in e["bytes"]).decode("utf-8") == text
    assert any(e["token"].startswith("bytes:\\x") for e in content) and "\ufffd" not in "".join(e["token"] for e in content)
    assert all(e["top_logprobs"][0]["bytes"] == e["bytes"] for e in content)
    lp, end = openai_protocol.completion_logprobs(tok, rows[:6], None, 0)
    lp2, end2 = openai_protocol.completion_logprobs(tok, rows[6:], None, end)   # the next stream chunk
    offsets = lp["text_offset"] + lp2["text_offset"]
    assert end2 == len(text) and offsets == sorted(offsets) and offsets[-1] < len(text)
