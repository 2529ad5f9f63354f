"""kick-hf stops generating where the first non-empty line ends, for tasks whose ``until`` names FIRST_LINE."""

import pytest
import torch
import yaml

from kick_common.stops import FIRST_LINE, first_line_done
from kick_tasks.normalize import first_line
from kick_testlib.tiny_models import byte_tokenizer


@pytest.mark.parametrize("text, done", [
    ("", False),
    ("\n\n  ", False),          # only leading whitespace: the first line has not started
    ("\nA:", False),
    ("\nA:\n", True),
    (" Paris", False),
    (" Paris\nQ:", True),
    ("  \r\n Lima \n", True),
])
def test_first_line_done(text, done):
    assert first_line_done(text) is done


def test_done_exactly_when_the_scored_first_line_can_no_longer_change():
    """Once done, every continuation keeps the first line; before, some continuation changes it."""
    for text in ["\nA:\n", " Paris\nQ:", "  \r\n Lima \n"]:
        assert all(first_line(text + tail) == first_line(text) for tail in ["", "x", "\nmore", " y\nz"])
    for text in ["\nA:", " Paris", "\n\n"]:
        assert any(first_line(text + tail) != first_line(text) for tail in ["x", "y\n"])


def test_criterion_stops_each_sequence_at_its_own_first_line():
    from kick_models.stopping import FirstLineStop

    tok = byte_tokenizer()
    prompt = tok(["Q: x\nA:", "Q: y\nA:"], add_special_tokens=False)["input_ids"]
    assert len(prompt[0]) == len(prompt[1])
    replies = ["\nBogot", " Lima\n"]  # equal byte lengths: one tensor
    ids = torch.tensor([p + tok(r, add_special_tokens=False)["input_ids"] for p, r in zip(prompt, replies)])
    stop = FirstLineStop(tok, prompt_len=len(prompt[0]))
    assert stop(ids, None).tolist() == [False, True]


@pytest.mark.parametrize("path", ["icrqa/_kick_icrqa_template_yaml", "freebase/kick_freebase.yaml",
                                  "freebase/kick_freebase_reference.yaml"])
def test_first_line_tasks_declare_the_marker(path):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "task_yamls" / path).read_text()
    config = yaml.load(text, Loader=yaml.BaseLoader)  # BaseLoader keeps `!function` values as plain strings
    assert config["generation_kwargs"]["until"] == [FIRST_LINE]


def test_kick_hf_reply_is_cut_after_the_first_line_and_scores_the_same(smol_path):
    """On SmolLM2, the reply with the marker is the full reply cut after its first line's end."""
    from lm_eval.api.instance import Instance

    from kick_models.lm import KickHFLM

    lm = KickHFLM(pretrained=str(smol_path), fidelity=False, dtype="float32", batch_size=2)
    prompts = ["Q: What is the capital of France?\nA:", "Answer these questions:\n\nQ: Who wrote Hamlet?\nA:",
               "List three colours:\n"]

    def generate(until):
        requests = [Instance("generate_until", {}, (p, {"until": until, "max_gen_toks": 24, "do_sample": False}), i)
                    for i, p in enumerate(prompts)]
        return lm.generate_until(requests)

    full, short = generate([]), generate([FIRST_LINE])
    assert [first_line(s) for s in short] == [first_line(f) for f in full]
    for s, f in zip(short, full):
        assert f.startswith(s)
        assert first_line_done(s) or s == f  # cut only after a complete first line
    assert any(len(s) < len(f) for s, f in zip(short, full))
