"""The Anthropic backend against a loopback fake of the Messages API (stdlib HTTP server, no model).

The fake only checks the client wiring: system field, role messages, assistant prefill, sampling
fields, non-streaming and SSE streaming responses.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

import sglc as sgl


class _Handler(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict]] = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "body": body, "key": self.headers.get("x-api-key") or self.headers.get("authorization")})
        last_user = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        reply = f" echo {last_user.split()[-1]}"
        usage = {"input_tokens": 7, "output_tokens": 2}
        if not body.get("stream"):
            msg = {"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                   "content": [{"type": "text", "text": reply}], "stop_reason": "end_turn", "stop_sequence": None,
                   "usage": usage}
            data = json.dumps(msg).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        start = {"id": "msg_2", "type": "message", "role": "assistant", "model": body["model"], "content": [],
                 "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 7, "output_tokens": 0}}
        events = [("message_start", {"type": "message_start", "message": start}),
                  ("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}})]
        for i in range(0, len(reply), 3):
            events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "text_delta", "text": reply[i:i + 3]}}))
        events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                                          "stop_sequence": None},
                                      "usage": {"output_tokens": 2}}),
                   ("message_stop", {"type": "message_stop"})]
        for name, data in events:
            self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()


@pytest.fixture(scope="module")
def fake_anthropic():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Handler.requests
    server.shutdown()


@sgl.function
def chat(s, question):
    s += sgl.system("Be brief.")
    s += sgl.user(question)
    s += sgl.assistant("Sure," + sgl.gen("answer", max_tokens=9, temperature=0.2, stop=["\n"], top_k=5))


def test_messages_request_and_response(fake_anthropic):
    url, requests = fake_anthropic
    requests.clear()
    state = chat.run(question="capital of France", backend=sgl.Anthropic("claude-x", base_url=url, api_key="k1"))
    assert state["answer"] == " echo France"
    assert state.messages()[-1] == {"role": "assistant", "content": "Sure, echo France"}
    body = requests[0]["body"]
    assert requests[0]["path"] == "/v1/messages" and requests[0]["key"] in ("k1", "Bearer k1")
    assert body["system"] == "Be brief."
    assert body["messages"] == [{"role": "user", "content": "capital of France"},
                                {"role": "assistant", "content": "Sure,"}]
    assert (body["max_tokens"], body["temperature"], body["top_k"], body["stop_sequences"]) == (9, 0.2, 5, ["\n"])
    assert state.get_meta_info("answer")["completion_tokens"] == 2


def test_streaming_and_select_fallback(fake_anthropic):
    url, _ = fake_anthropic

    @sgl.function
    def pick(s):
        s += sgl.user("say France")
        s += sgl.assistant(sgl.select("country", choices=["Spain", "echo France"]))

    backend = sgl.Anthropic("claude-x", base_url=url, api_key="k1")
    state = chat.run(question="capital of Peru", backend=backend, stream=True)
    pieces = list(state.text_iter("answer"))
    assert len(pieces) > 1 and "".join(pieces) == state["answer"] == " echo Peru"
    assert pick.run(backend=backend)["country"] == "echo France"
