"""Chat templates (from a Jinja tokenizer template and built-ins), select scoring rules, choice matching."""
from __future__ import annotations

import jinja2
import pytest

import sglc as sgl
from sglc.backend.base import match_choice
from sglc.chat_template import from_tokenizer, list_chat_templates
from sglc.choices import BY_NAME, method_name

SMOL = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are SmolLM<|im_end|>\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
          "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}")
NO_SYSTEM = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system') }}{% endif %}"
             "[{{ m['role'] }}]{{ m['content'] }}{% endfor %}")


class JinjaTokenizer:
    """Just enough of a HF tokenizer: ``chat_template`` and ``apply_chat_template(tokenize=False)``."""

    def __init__(self, template: str) -> None:
        self.chat_template = template
        env = jinja2.Environment()
        env.globals["raise_exception"] = self._raise
        self.t = env.from_string(template)

    @staticmethod
    def _raise(msg: str) -> None:
        raise jinja2.TemplateError(msg)

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        return self.t.render(messages=messages, add_generation_prompt=add_generation_prompt, bos_token="<s>")


def test_template_from_smollm_style_jinja():
    t = from_tokenizer(JinjaTokenizer(SMOL))
    for role in ("system", "user", "assistant"):
        assert t.role_prefix_and_suffix[role] == (f"<|im_start|>{role}\n", "<|im_end|>\n")
    assert t.default_system_prompt == "You are SmolLM"
    assert t.stop_str == ("<|im_end|>",)


def test_template_from_llama3_style_jinja():
    t = from_tokenizer(JinjaTokenizer(LLAMA3))
    assert t.prefix("system") == "<s><|start_header_id|>system<|end_header_id|>\n\n"
    assert t.prefix("user") == "<|start_header_id|>user<|end_header_id|>\n\n"
    assert t.suffix("assistant") == "<|eot_id|>"
    assert t.default_system_prompt is None


def test_template_falls_back_to_chatml_when_system_is_rejected():
    t = from_tokenizer(JinjaTokenizer(NO_SYSTEM))
    assert t.name == "chatml"


@pytest.mark.parametrize("name", ["chatml", "llama-3-instruct", "vicuna_v1.1", "mistral", "default"])
def test_builtin_templates(name):
    t = sgl.get_chat_template(name)
    assert set(t.role_prefix_and_suffix) == {"system", "user", "assistant"}
    assert name in list_chat_templates()


def test_unknown_template_names_the_builtins():
    with pytest.raises(ValueError, match="built-ins: .*chatml"):
        sgl.get_chat_template("nope")


LPS = [[-1.0, -1.0], [-0.5, -3.0, -3.0], [-0.5, -2.0]]


def test_token_length_normalized_picks_best_mean():
    assert BY_NAME["token_length_normalized"].pick(LPS) == 0


def test_greedy_token_selection_walks_positions():
    # position 0 ties choices 1 and 2; position 1 picks 2
    assert BY_NAME["greedy_token_selection"].pick(LPS) == 2


def test_unconditional_likelihood_normalized_subtracts_prior():
    unconditional = [[-0.1, -0.1], [-3.0, -3.0, -3.0], [-0.5, -2.0]]
    assert BY_NAME["unconditional_likelihood_normalized"].pick(LPS, unconditional) == 1
    with pytest.raises(ValueError, match="unconditional"):
        BY_NAME["unconditional_likelihood_normalized"].pick(LPS)


def test_choices_method_accepts_objects_and_names():
    assert method_name(sgl.greedy_token_selection) == "greedy_token_selection"
    assert method_name(None) == "token_length_normalized"
    with pytest.raises(ValueError, match="unknown choices_method"):
        method_name("majority")


@pytest.mark.parametrize("text, expected", [
    ("search engine", "search engine"), (" Calculator.", "calculator"), ("I would use the search engine", "search engine"),
    ("calc", "calculator"),
])
def test_match_choice(text, expected):
    assert match_choice(text, ("calculator", "search engine")) == expected
