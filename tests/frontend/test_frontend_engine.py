"""The example programs on the embedded model through the in-process Engine (one Engine per module).

Token budgets are tiny (CPU CI): assertions check structure, not prose.
"""
from __future__ import annotations

import importlib.util
import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest

import ir
import sglc as sgl
from sglc.backend.base import Prompt

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def engine(embedded_engine):
    return embedded_engine


@pytest.fixture(scope="module")
def openai_url(engine):
    """sglc's own OpenAI-compatible HTTP app over the shared engine, served on loopback in a thread."""
    import uvicorn

    from runtime.server.chat_template import resolve
    from runtime.server.http_server import ServerState, create_app

    state = ServerState(engine=engine, chat_template=resolve(None, engine.tokenizer), served_model_name="smol")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the loopback OpenAI server did not start"
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


def test_multi_turn_roles(engine):
    state = load_example("multi_turn_chat").main(engine, max_new_tokens=6)
    roles = [m["role"] for m in state.messages()]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert state.messages()[2]["content"] == state["answer_1"] and state["answer_1"].strip()
    assert "<|im_start|>assistant\n" + state["answer_2"] + "<|im_end|>" in state.text()
    assert state.get_meta_info("answer_1")["completion_tokens"] <= 6


def test_tool_use_select_and_control_flow(engine):
    mod = load_example("tool_use")
    state = mod.main(engine, max_new_tokens=4)
    assert state["tool"] in ("calculator", "search engine")
    follow = "The math expression is" if state["tool"] == "calculator" else "The key word to search is"
    assert follow in state.text()
    assert len(state.get_meta_info("tool")["scores"]) == 2
    # NOTE: comparing the select's value traces into a switch; graph mode runs only the taken case
    graph = mod.tool_use.trace()
    assert [n.kind for _, n in graph.items()].count("switch") == 1
    again = mod.tool_use.run_graph(graph=graph, backend=engine, question="What is the population of London?",
                                   temperature=0, stop="\n", max_new_tokens=4)
    assert again.text() == state.text() and again.variables() == state.variables()


def test_tip_suggestion_forks_reach_parent_and_graph_mode_matches(engine):
    mod = load_example("tip_suggestion")
    eager = mod.main(engine, max_new_tokens=5)
    text = eager.text()
    assert text.count("expand tip") == 0  # the branches' prompts stay in the forks
    tip1 = text.split("Tip 1:")[1].split("\nTip 2:")[0]
    assert tip1.strip() and "In summary" in text
    graph = mod.tip_suggestion.trace()
    assert [n.kind for _, n in graph.items()].count("gen") == 3
    again = mod.tip_suggestion.run_graph(backend=engine, temperature=0, max_new_tokens=5)
    assert again.text() == text


def test_regex_ip_full_match(engine):
    mod = load_example("regex_ip")
    state = mod.main(engine)
    assert re.fullmatch(mod.IP_REGEX, state["answer"]), state["answer"]


def test_harry_potter_json_full_match(engine):
    mod = load_example("json_harry_potter")
    state = mod.main(engine)
    out = state["json_output"]
    assert re.fullmatch(mod.character_regex, out), out
    assert json.loads(out)["house"] in ("Gryffindor", "Slytherin", "Ravenclaw", "Hufflepuff")


def test_batch_equals_run(engine):
    mod = load_example("batch_qa")
    states = mod.main(engine, max_new_tokens=6)
    singles = [mod.text_qa.run(question=q, temperature=0, max_new_tokens=6) for q in mod.QUESTIONS]
    assert [s["answer"] for s in states] == [s["answer"] for s in singles]
    assert all(s.text().startswith("Q: " + q) for s, q in zip(states, mod.QUESTIONS))


def test_streaming_pieces_join(engine):
    state, pieces = load_example("streaming").main(engine, max_new_tokens=6, temperature=0)
    assert len(pieces) >= 3
    assert "".join(pieces) == state.text()
    assert state.text().endswith(state["answer"])


@pytest.mark.parametrize("method", ["token_length_normalized", "greedy_token_selection",
                                    "unconditional_likelihood_normalized"])
def test_select_methods_and_gen_int(engine, method):
    @sgl.function
    def prog(s):
        s += "Q: Is the sky blue? A:" + sgl.select("yn", choices=[" yes", " no", " maybe"], choices_method=method)
        s += "\nQ: How many legs does a dog have? A: " + sgl.gen_int("legs", max_tokens=3)

    state = prog.run(backend=engine, temperature=0)
    assert state["yn"] in (" yes", " no", " maybe")
    assert state.get_meta_info("yn")["method"] == method
    assert re.fullmatch(r"[-+]?[0-9]+[ \n]*", state["legs"]), state["legs"]


def test_frontend_demo_graph_equals_eager(engine, monkeypatch, capsys):
    mod = load_example("frontend_demo")
    graph, g, e = mod.main(engine, max_new_tokens=3)
    assert g.text() == e.text()
    assert g["verdict"] in ("yes", "no") and len(g["detail"]) == 2
    assert ir.loads(ir.dumps(graph)) == graph
    assert "%11 = fork @s0 n=2" in capsys.readouterr().out


@sgl.function
def chat_qa(s, question):
    s += sgl.system("You are a helpful assistant.")
    s += sgl.user(question)
    s += sgl.assistant(sgl.gen("answer", max_tokens=5))
    s += sgl.user("Answer with one word: is that correct?")
    s += sgl.assistant(sgl.select("verdict", choices=["yes", "no"]))


def test_openai_backend_against_sglc_http_server(engine, openai_url):
    backend = sgl.OpenAI("smol", base_url=openai_url, api_key="unused")
    via_api = chat_qa.run(question="What is the capital of France?", backend=backend, temperature=0)
    local = chat_qa.run(question="What is the capital of France?", backend=engine, temperature=0)
    assert via_api["answer"] == local["answer"] and via_api["answer"].strip()
    assert [m["role"] for m in via_api.messages()] == ["system", "user", "assistant", "user", "assistant"]
    assert via_api["verdict"] in ("yes", "no")
    assert via_api.get_meta_info("verdict")["method"] == "generation"
    assert via_api.get_meta_info("answer")["completion_tokens"] <= 5

    streamed = chat_qa.run(question="What is the capital of France?", backend=backend, temperature=0,
                           stream=True)
    pieces = list(streamed.text_iter("answer"))
    assert "".join(pieces) == streamed["answer"] == via_api["answer"]


def test_openai_backend_rejects_gen_outside_assistant(openai_url):
    @sgl.function
    def bad(s):
        s += sgl.user("hi " + sgl.gen("x", max_tokens=2))

    with pytest.raises(sgl.InterpreterError, match="only inside an assistant role"):
        bad.run(backend=sgl.OpenAI("smol", base_url=openai_url, api_key="unused"))


@pytest.fixture(scope="module")
def grpc_target(engine):
    """The gRPC Runtime service over the shared engine, on its own event loop thread."""
    import asyncio

    from runtime.server.chat_template import resolve
    from runtime.server.grpc_server import start_grpc_server

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server, port = asyncio.run_coroutine_threadsafe(
        start_grpc_server(engine, "127.0.0.1", 0, chat_template=resolve(None, engine.tokenizer)), loop).result(30)
    yield f"grpc://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def italy_local(engine):
    return chat_qa.run(question="What is the capital of Italy?", backend=engine, temperature=0)


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_runtime_endpoint_matches_local_engine(engine, grpc_target, openai_url, italy_local, transport):
    url = grpc_target if transport == "grpc" else openai_url.removesuffix("/v1")
    remote = sgl.RuntimeEndpoint(url)
    local_template = sgl.EngineBackend(engine).chat_template.role_prefix_and_suffix
    assert remote.chat_template.role_prefix_and_suffix == local_template
    via_remote = chat_qa.run(question="What is the capital of Italy?", backend=remote, temperature=0)
    assert via_remote.text() == italy_local.text()
    assert via_remote.get_meta_info("verdict")["normalized_prompt_logprobs"] == pytest.approx(
        italy_local.get_meta_info("verdict")["normalized_prompt_logprobs"], abs=1e-3)
    streamed = chat_qa.run(question="What is the capital of Italy?", backend=remote, temperature=0, stream=True)
    pieces = list(streamed.text_iter())
    assert "".join(pieces) == italy_local.text()
    remote.warm("Keep this prefix for one request.", expect=1)   # the pin hint travels over both transports
    m = engine.metrics()
    assert m["kv_cached_tokens"] > m["kv_evictable_tokens"]
    remote.generate(Prompt("Keep this prefix for one request. Go"), {"max_new_tokens": 1})
    m = engine.metrics()
    assert m["kv_cached_tokens"] == m["kv_evictable_tokens"]
    assert remote.flush_cache() in (True, False)
    remote.shutdown()


@sgl.function
def capital_after_space(s):
    s += "Q: What is the capital of France?\nA: The capital of France is " + sgl.select(
        "city", ["London", "Berlin", "Paris"])


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_select_after_a_trailing_space_matches_the_engine(engine, grpc_target, openai_url, transport):
    """Over HTTP "... is " + "Paris" tokenizes as "... is" + " Paris": scoring from the prefix's token count
    scored no token of any choice, every choice tied at 0.0 and the first ("London") won. The transport now
    scores from the prefix's last token and keeps it when the choice absorbed it (SGLang's token healing)."""
    local = capital_after_space.run(backend=engine)
    url = grpc_target if transport == "grpc" else openai_url.removesuffix("/v1")
    remote = sgl.RuntimeEndpoint(url)
    try:
        state = capital_after_space.run(backend=remote)
    finally:
        remote.shutdown()
    assert local["city"] == "Paris" and state["city"] == "Paris"
    assert all(s["num_tokens"] > 0 for s in state.get_meta_info("city")["scores"])


@pytest.mark.parametrize("transport", ["engine", "grpc", "http"])
def test_return_text_in_logprobs(engine, grpc_target, openai_url, transport):
    """SGLang's ``gen(..., return_text_in_logprobs=True)``: logprob rows are ``[logprob, id, text]`` (top ones
    too) on every backend; without it they stay ``[logprob, id]``."""
    @sgl.function
    def prog(s, texts):
        s += "The capital of France is" + sgl.gen("c", max_tokens=3, temperature=0, return_logprob=True,
                                                  top_logprobs_num=2, return_text_in_logprobs=texts)

    backend = {"engine": engine, "grpc": grpc_target, "http": openai_url.removesuffix("/v1")}[transport]
    remote = sgl.RuntimeEndpoint(backend) if transport != "engine" else None
    try:
        meta = prog.run(texts=True, backend=remote or engine).get_meta_info("c")
        plain = prog.run(texts=False, backend=remote or engine).get_meta_info("c")
    finally:
        if remote is not None:
            remote.shutdown()
    rows, tops = meta["output_token_logprobs"], meta["output_top_logprobs"]
    assert len(rows) == 3 and all(len(r) == 3 and r[2] == engine.tokenizer.decode([r[1]]) for r in rows)
    assert all(len(t) == 3 and t[2] == engine.tokenizer.decode([t[1]]) for pos in tops for t in pos)
    assert "".join(r[2] for r in rows) == engine.tokenizer.decode([r[1] for r in rows])
    assert [len(r) for r in plain["output_token_logprobs"]] == [2, 2, 2]


def test_json_schema_from_pydantic_model(engine):
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        country: str

    @sgl.function
    def prog(s):
        s += sgl.user("Give me a famous city as JSON.")
        s += sgl.assistant(sgl.gen("city", json_schema=City, max_tokens=40))

    state = prog.run(backend=engine, temperature=0)
    city = City.model_validate_json(state["city"])
    assert city.name and state.get_meta_info("city")["finish_reason"]["type"] == "stop"
