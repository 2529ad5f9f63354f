"""kick_summarization: story parsing, no @highlight leaks, duplicates, prompt snapshot, token fitting, metrics."""

import re

import pytest
from lm_eval.evaluator import simple_evaluate
from lm_eval.tasks import TaskManager

from kick_tasks import task_yamls_dir
from kick_tasks.summarization import INSTRUCTION, load_cnndm, parse_story, rouge_scores
from kick_testlib.loopback import LoopbackJudgeServer

STORY = """(CNN) -- First paragraph
wrapped here.

Second paragraph.

@highlight

Point one

@highlight

Point two.
"""


@pytest.fixture(scope="module")
def dataset():
    return load_cnndm()


@pytest.fixture(scope="module")
def tm():
    return TaskManager(include_path=str(task_yamls_dir()), include_defaults=False)


def test_parse_story_splits_highlights_and_spaces_sentences():
    article, highlights = parse_story(STORY)
    assert article == "(CNN) -- First paragraph wrapped here.\n\nSecond paragraph."
    assert highlights == ["Point one", "Point two."]


def test_splits_sizes_and_duplicates(dataset):
    assert {k: len(v) for k, v in dataset.items()} == {"small": 30, "mid": 30, "large": 30, "mid_unique": 12}
    assert sum(dataset["mid"]["duplicate_of_small"]) == 18
    assert not any(dataset["small"]["duplicate_of_small"]) and not any(dataset["large"]["duplicate_of_small"])
    small_names = set(dataset["small"]["name"])
    assert {d["name"] for d in dataset["mid"] if d["duplicate_of_small"]} <= small_names


def test_no_highlight_leak_and_reference_is_highlights(tm, dataset):
    tasks = tm.load(["kick_summarization"])["tasks"]
    for task in tasks.values():
        for doc in task.test_docs():
            prompt = task.doc_to_text(doc)
            assert "@highlight" not in prompt and "@highlight" not in doc["reference"]
            assert 2 <= len(doc["highlights"]) <= 4
            assert doc["reference"].endswith((".", "!", "?", '"', "'"))
            assert not re.search(r"[a-z][.!?][A-Z]", doc["reference"])  # sentences never glued
            assert "  " not in doc["article"]


def test_prompt_snapshot():
    # kick's own wording, the default before task version 2
    tm = TaskManager(include_path=str(task_yamls_dir()), include_defaults=False,
                     metadata={"summarization_prompt": "kick"})
    task = tm.load(["kick_summarization_small"])["tasks"]["kick_summarization_small"]
    doc = task.test_docs()[0]
    prompt = task.doc_to_text(doc)
    assert prompt.startswith(
        "Summarize the news article below in fewer than 150 words. The summary must stay faithful "
        "to the article (no invented facts), keep its most important points, read as one coherent "
        "piece, and be written in fluent, well-formed sentences.\n\nArticle:\n(CNN) -- ")
    assert prompt.endswith("\n\nSummary:") and prompt.startswith(INSTRUCTION)
    assert task.config.generation_kwargs["do_sample"] is False


def test_rouge_known_values():
    assert rouge_scores("the cat sat", "the cat sat")["rouge1"] == pytest.approx(1.0)
    assert rouge_scores("dogs bark", "the cat sat")["rougeL"] == 0.0


@pytest.mark.slow
def test_long_stories_are_truncated_by_tokens_and_flagged(smol_path):
    tm = TaskManager(include_path=str(task_yamls_dir()), include_defaults=False,
                     metadata={"pretrained": str(smol_path), "max_length": 900,
                               "summarization_prompt": "kick"})
    task = tm.load(["kick_summarization_large"])["tasks"]["kick_summarization_large"]
    task.build_all_requests(limit=3, rank=0, world_size=1)
    tokenizer, budget = task._fit
    assert 0 < budget < 900 - 512
    assert len(task.truncated) == 3
    for inst in task.instances:
        prompt = inst.args[0]
        assert prompt.endswith("[...]\n\nSummary:") and prompt.startswith(INSTRUCTION)
        assert len(tokenizer(prompt)["input_ids"]) <= 900 - 512


def test_summarization_end_to_end_with_judge(tm, monkeypatch, tmp_path):
    from lm_eval.api.model import LM

    class LeadLM(LM):
        """Summarizes with the article's first sentence."""

        def generate_until(self, requests, disable_tqdm=False):
            return [r.args[0].split("\n\n", 1)[1].split(".")[0] + "." for r in requests]

        def loglikelihood(self, requests, disable_tqdm=False):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            raise NotImplementedError

    four = "Faithful but thin.\nCoherence: [[4]]\nConsistency: [[4]]\nFluency: [[4]]\nRelevance: [[4]]"
    with LoopbackJudgeServer(lambda body: four) as server:
        monkeypatch.setenv("KICK_JUDGE_MODEL", "loopback-judge")
        monkeypatch.setenv("KICK_JUDGE_BASE_URL", server.base_url)
        monkeypatch.setenv("KICK_JUDGE_CACHE_DIR", str(tmp_path))
        out = simple_evaluate(model=LeadLM(), tasks=["kick_summarization_mid"], task_manager=tm,
                              limit=2, bootstrap_iters=0)
    res = out["results"]["kick_summarization_mid"]
    assert res["judge_score,none"] == 4.0 and res["judge_unparsed,none"] == 0
    assert 0 < res["rouge1,none"] <= 1 and res["summary_words,none"] > 3
    assert res["truncated,none"] == 0
    prompts = [r["messages"][-1]["content"] for r in server.requests]
    assert len(prompts) == 2 and all("@highlight" not in p for p in prompts)
    assert all("<<Editors' key points>>" in p for p in prompts)


def test_reference_prompt_is_the_default(tm):
    """LLM-KICK's instruction ("story" for small, "news" for mid/large), a blank line, the text."""
    tasks = tm.load(["kick_summarization"])["tasks"]
    for name, kind in (("kick_summarization_small", "story"), ("kick_summarization_mid", "news"),
                       ("kick_summarization_large", "news")):
        task = tasks[name]
        doc = task.test_docs()[0]
        assert task.doc_to_text(doc) == (
            f"Summarize the given {kind} in less than 150 words while preserving high coherence, "
            f"consistency, fluency, and relevance.\n\n{doc['article']}")
        assert task.VERSION == 2.0


def test_unknown_prompt_style_is_refused():
    tm = TaskManager(include_path=str(task_yamls_dir()), include_defaults=False,
                     metadata={"summarization_prompt": "fancy"})
    with pytest.raises(ValueError, match="summarization_prompt='fancy'.*reference, kick"):
        task = tm.load(["kick_summarization_small"])["tasks"]["kick_summarization_small"]
        task.build_all_requests(limit=1, rank=0, world_size=1)


def test_four_criteria_reported_per_task_and_group(tm, monkeypatch, tmp_path):
    from lm_eval.api.model import LM

    class FirstSentenceLM(LM):
        def generate_until(self, requests, disable_tqdm=False):
            return [r.args[0].split("\n\n", 1)[1].split(".")[0] + "." for r in requests]

        def loglikelihood(self, requests, disable_tqdm=False):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            raise NotImplementedError

    def judge(body):
        text = body["messages"][-1]["content"]
        assert "<<Editors' key points>>" in text and "Coherence: [[N]]" in text
        return "Coherence: [[8]]\nConsistency: [[6]]\nFluency: [[9]]\nRelevance: [[5]]"

    with LoopbackJudgeServer(judge) as server:
        monkeypatch.setenv("KICK_JUDGE_MODEL", "loopback-judge")
        monkeypatch.setenv("KICK_JUDGE_BASE_URL", server.base_url)
        monkeypatch.setenv("KICK_JUDGE_CACHE_DIR", str(tmp_path))
        out = simple_evaluate(model=FirstSentenceLM(), tasks=["kick_summarization"], task_manager=tm,
                              limit=1, bootstrap_iters=0)
    for name in ("kick_summarization_small", "kick_summarization_mid", "kick_summarization_large"):
        res = out["results"][name]
        assert (res["judge_coherence,none"], res["judge_consistency,none"], res["judge_fluency,none"],
                res["judge_relevance,none"]) == (8.0, 6.0, 9.0, 5.0)
        assert res["judge_score,none"] == 7.0
    group = out["groups"]["kick_summarization"]
    assert group["judge_score,none"] == 7.0 and group["judge_relevance,none"] == 5.0
    assert 0 < group["rouge1,none"] <= 1 and group["rougeL,none"] > 0
