"""Continuous batching in kick-hf's generate_until: lm-eval's answers (stop sequences, max_gen_toks, left
truncation), requests cancelled at their stop, the model_arg refused before loading, and the fall-backs."""

from __future__ import annotations

import logging

import pytest
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from kick_common.stops import FIRST_LINE
from kick_models import generation
from kick_models.config import ConfigError
from kick_models.lm import split_model_args

CONTEXTS = ["hello world", "the quick brown fox jumps", "a", "lorem ipsum dolor sit amet " * 12]


def requests(gen_kwargs: dict, contexts=CONTEXTS) -> list[Instance]:
    return [Instance("generate_until", None, (c, dict(gen_kwargs)), i) for i, c in enumerate(contexts)]


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    """kick-hf on the suite's tiny Llama (byte-level tokenizer, so any character can be a stop sequence)."""
    from kick_models.lm import KickHFLM

    return KickHFLM(pretrained=str(tiny_model_dir), dtype="float32", batch_size=3, max_length=160,
                    continuous_batching="true", fidelity="false", no_cache="true")


def test_answers_are_lm_evals_with_and_without_stop_sequences(tiny_lm):
    free = {"until": [], "max_gen_toks": 16, "do_sample": False}
    expected = HFLM.generate_until(tiny_lm, requests(free))
    assert generation.generate_until(tiny_lm, requests(free)) == expected
    # stop sequences taken from the free answers, so they do occur: the answers are cut there
    stops = [expected[0][5:7], expected[1][3]]
    stopped = {"until": stops, "max_gen_toks": 16, "do_sample": False}
    expected_cut = HFLM.generate_until(tiny_lm, requests(stopped))
    assert len(expected_cut[0]) <= 5 and len(expected_cut[1]) <= 3
    mixed = requests(stopped) + requests({**free, "max_gen_toks": 7})  # two groups, answered in request order
    assert generation.generate_until(tiny_lm, mixed) == expected_cut + HFLM.generate_until(tiny_lm, mixed[4:])


def test_prompts_longer_than_the_context_are_left_truncated_like_lm_eval(tiny_lm):
    long = ["0123456789" * 30, "abc" * 70]  # 300 and 210 byte tokens > max_length 160 - 16
    kwargs = {"until": [], "max_gen_toks": 16, "do_sample": False}
    assert generation.generate_until(tiny_lm, requests(kwargs, long)) == HFLM.generate_until(tiny_lm, requests(kwargs, long))


def test_a_request_is_cancelled_once_its_stop_sequence_shows(tiny_lm):
    prompts = [generation.encode(tiny_lm, c, 40) for c in CONTEXTS]
    runs = generation.run_group(tiny_lm, prompts, generation.Group(list(range(len(prompts))), [], 40))
    prompt, free = next((p, run) for p, run in zip(prompts, runs) if len(run) == 40)  # one that never hit EOS
    stop = tiny_lm.tokenizer.decode(free)[2:4]  # early in the free answer
    cut = generation.run_group(tiny_lm, [prompt], generation.Group([0], [stop], 40))[0]
    assert cut == free[:len(cut)] and len(cut) < 20  # stopped soon after the stop, not at max_gen_toks


@pytest.mark.parametrize(("gen_kwargs", "reason"), [
    ({"until": [], "do_sample": True, "temperature": 0.7}, "sampling"),
    ({"until": [], "do_sample": False, "top_p": 0.9}, "top_p"),
])
def test_requests_it_cannot_reproduce_go_to_lm_evals_path_with_one_line(tiny_lm, caplog, gen_kwargs, reason):
    with caplog.at_level(logging.INFO, logger="kick_models.generation"):
        assert generation.generate_until(tiny_lm, requests(gen_kwargs)) is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and reason in lines[0] and "lm-eval" in lines[0]


def test_models_it_cannot_run_are_named(tiny_lm, monkeypatch):
    assert generation.model_reason(tiny_lm) is None
    monkeypatch.setattr(tiny_lm, "mixed_precision_dtype", "bfloat16", raising=False)
    assert "autocast" in generation.model_reason(tiny_lm)
    monkeypatch.setattr(tiny_lm, "mixed_precision_dtype", None, raising=False)
    monkeypatch.setattr(tiny_lm.model, "hf_device_map", {"model.layers.0": 0, "model.layers.1": "cpu"}, raising=False)
    assert "several devices" in generation.model_reason(tiny_lm)


def test_kick_hf_routes_generation_and_records_the_path(tiny_lm, monkeypatch):
    kwargs = {"until": [], "max_gen_toks": 5, "do_sample": False}
    tiny_lm.generate_until(requests(kwargs))
    assert tiny_lm.get_model_info()["kick"]["result"]["generation"] == "continuous batching"
    monkeypatch.setitem(tiny_lm._kick_options, "continuous_batching", "false")
    tiny_lm.generate_until(requests(kwargs))
    assert tiny_lm.get_model_info()["kick"]["result"]["generation"] == "lm-eval batches"


@pytest.mark.parametrize(("value", "mode"), [("auto", "auto"), ("True", "true"), ("false", "false"), (False, "false")])
def test_the_model_arg_is_read(value, mode):
    _, kick, hflm = split_model_args({"continuous_batching": value})
    assert kick["continuous_batching"] == mode and "continuous_batching" not in hflm


def test_a_bad_model_arg_is_refused_with_what_is_accepted():
    with pytest.raises(ConfigError, match=r"continuous_batching='maybe'; accepted: auto \| true \| false"):
        split_model_args({"continuous_batching": "maybe"})


def test_auto_is_on_for_cuda_only():
    assert generation.wanted("auto", "cuda:0") and not generation.wanted("auto", "cpu")
    assert generation.wanted("true", "cpu") and not generation.wanted("false", "cuda")


def test_the_first_line_marker_ends_a_request_where_its_first_line_closes(tiny_lm):
    tokenizer = tiny_lm.tokenizer
    tokens = tokenizer("\n  ab\ncd\n", add_special_tokens=False)["input_ids"]  # byte tokens
    assert generation.first_line_length(tokenizer, tokens, 1) == 6  # "\n  ab\n": the leading break is skipped
    assert generation.first_line_length(tokenizer, tokens[:5], 1) is None
    kwargs = {"until": [FIRST_LINE], "max_gen_toks": 16, "do_sample": False}
    assert generation.generate_until(tiny_lm, requests(kwargs)) == HFLM.generate_until(tiny_lm, requests(kwargs))
