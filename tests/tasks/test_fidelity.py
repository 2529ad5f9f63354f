"""Fidelity to LLM-KICK's protocol and the groups' reporting: prompts as the reference wrote them,
closed/open book side by side, unparsed answers in the MMLU groups."""

import pytest
from lm_eval.api.model import LM
from lm_eval.evaluator import simple_evaluate
from lm_eval.tasks import TaskManager

from kick_tasks import task_yamls_dir


class ConstantLM(LM):
    """Answers every prompt with ``reply`` and keeps the prompts."""

    def __init__(self, reply):
        super().__init__()
        self.reply = reply
        self.prompts = []

    def generate_until(self, requests, disable_tqdm=False):
        self.prompts += [r.args[0] for r in requests]
        return [self.reply for _ in requests]

    def loglikelihood(self, requests, disable_tqdm=False):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError


@pytest.fixture(scope="module")
def tm():
    return TaskManager(include_path=str(task_yamls_dir()), include_defaults=False)


def test_icrqa_group_reports_closed_and_open_side_by_side_without_a_mean(tm):
    out = simple_evaluate(model=ConstantLM("Paris"), tasks=["kick_icrqa_mini"], task_manager=tm,
                          limit=2, bootstrap_iters=0)
    results = out["results"]
    assert "exact_match,none" in results["kick_icrqa_mini_closed"]
    assert "exact_match,none" in results["kick_icrqa_mini_open"]
    group = {**results.get("kick_icrqa_mini", {}), **out.get("groups", {}).get("kick_icrqa_mini", {})}
    assert not any(key.startswith(("exact_match", "f1", "contains_paper")) for key in group)


def test_mmlu_gen_groups_report_unparsed(tm):
    out = simple_evaluate(model=ConstantLM(" none of these"), tasks=["kick_mmlu_gen_stem"],
                          task_manager=tm, limit=1, bootstrap_iters=0)
    group = out["groups"]["kick_mmlu_gen_stem"]
    assert group["unparsed,none"] == 1.0 and group["acc,none"] == 0.0


def test_instruct_reports_the_papers_1_to_10_rating_per_category(tm, monkeypatch, tmp_path):
    """LLM-KICK's judge rates the model's answer next to GPT-3.5's; kick does so in both orders."""
    from kick_testlib.loopback import LoopbackJudgeServer

    def judge(body):
        text = body["messages"][-1]["content"]
        a = text.split("<<Answer A>>\n")[1].split("\n<</Answer A>>")[0]
        model_first = a == "A short answer."
        # the model's answer gets 4 when shown first and 6 when shown second; GPT-3.5's gets 8
        return "Scores: [[4, 8]]\n[[B]]" if model_first else "Scores: [[8, 6]]\n[[A]]"

    task = tm.load(["kick_instruct"])["tasks"]["kick_instruct"]
    docs = list(task.test_docs())
    coding = [i for i, d in enumerate(docs) if d["category"] == "coding"][:2]
    generic = [i for i, d in enumerate(docs) if d["category"] == "generic"][:1]
    with LoopbackJudgeServer(judge) as server:
        monkeypatch.setenv("KICK_JUDGE_MODEL", "loopback-judge")
        monkeypatch.setenv("KICK_JUDGE_BASE_URL", server.base_url)
        monkeypatch.setenv("KICK_JUDGE_CACHE_DIR", str(tmp_path))
        out = simple_evaluate(model=ConstantLM("A short answer."), tasks=["kick_instruct"],
                              task_manager=tm, samples={"kick_instruct": coding + generic},
                              bootstrap_iters=0)
    res = out["results"]["kick_instruct"]
    assert res["judge_rating,none"] == 5.0 and res["judge_rating_reference,none"] == 8.0
    assert res["judge_rating_coding,none"] == 5.0 and res["judge_rating_generic,none"] == 5.0
    assert res["judge_loss_rate,none"] == 1.0                     # the verdicts still count
    coding_prompts = [r["messages"][-1]["content"] for r in server.requests
                      if "programming question" in r["messages"][-1]["content"]]
    assert len(coding_prompts) == 4 and len(server.requests) == 6   # 3 items x 2 orders, no extra calls
    assert task.VERSION == 2.0


# ------------------------------------------------------------------ TriviaQA evidence budgets


def _open_task(tm_meta):
    tm = TaskManager(include_path=str(task_yamls_dir()), include_defaults=False, metadata=tm_meta)
    return tm.load(["kick_icrqa_mini_open"])["tasks"]["kick_icrqa_mini_open"]


def test_open_book_fits_the_context_under_a_chat_template(smol_path):
    """lm-eval renders the chat template around the prompt; the evidence budget must count it,
    or lm-eval cuts the prompt from the left (and the template header with it)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smol_path)
    task = _open_task({"pretrained": str(smol_path), "max_length": 256})

    def render(history, add_generation_prompt=True):   # what HFLM.apply_chat_template does
        return tokenizer.apply_chat_template(history, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)

    task.build_all_requests(limit=3, rank=0, world_size=1, apply_chat_template=True,
                            chat_template=render)
    for inst in task.instances:
        rendered = inst.args[0]
        assert rendered.startswith("<|im_start|>system")
        assert len(tokenizer(rendered)["input_ids"]) <= 256 - 32


def test_open_book_budget_uses_the_evaluated_models_tokenizer(smol_path):
    """No pretrained=/tokenizer= in the metadata (an API model): the running model's tokenizer and
    context decide; a model without a Hugging Face tokenizer gets the paper's cut and a warning."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smol_path)

    class TokenizedLM(ConstantLM):
        max_length = 200

        def __init__(self, tok):
            super().__init__("Paris")
            self.tokenizer = tok

    tm = TaskManager(include_path=str(task_yamls_dir()), include_defaults=False)
    lm = TokenizedLM(tokenizer)
    simple_evaluate(model=lm, tasks=["kick_icrqa_mini_open"], task_manager=tm, limit=2, bootstrap_iters=0)
    assert all(len(tokenizer(p)["input_ids"]) <= 200 - 32 for p in lm.prompts)
    assert all(p.endswith("\nA:") for p in lm.prompts)

    plain = ConstantLM("Paris")
    simple_evaluate(model=plain, tasks=["kick_icrqa_mini_open"], task_manager=tm, limit=2, bootstrap_iters=0)
    from kick_tasks.icrqa import PAPER_EVIDENCE_CHARS, evidence_text, load_mini

    docs = load_mini()["validation"]
    for prompt, doc in zip(plain.prompts, docs, strict=False):
        assert prompt.split("\n\nBased on these texts")[0] == evidence_text(doc)[:PAPER_EVIDENCE_CHARS].strip()


def test_evidence_chars_reproduces_the_reference_cut():
    """The reference glues the first Wikipedia page and the first web result as they are, cuts
    3,072 characters, adds a blank line and the question, and strips the whole prompt."""
    from kick_tasks.icrqa import open_book_prompt, reference_evidence

    wiki, web = "  Wiki page text.\n\n" + "w" * 40, "\nWeb result " + "x" * 50
    doc = {"question": "Who?", "entity_pages": {"wiki_context": [wiki, "other"]},
           "search_results": {"search_context": [web]}}
    end = "Based on these texts, answer these questions:\n\nQ: Who?\nA:"
    for chars in (10, 62, 3072):
        expected = f"{(wiki + web)[:chars]}\n\n{end}".strip()
        task = _open_task({"icrqa_evidence_chars": chars})
        assert task.doc_to_text(doc) == expected
    assert reference_evidence(doc) == wiki + web
    assert open_book_prompt(doc, (wiki + web)[:62]).startswith("Wiki page text.\n\nwww")


# ------------------------------------------------------------------ FreebaseQA


class StoppingLM(ConstantLM):
    """Applies the request's ``until`` the way lm-eval's HF model does (cut at the first stop)."""

    def generate_until(self, requests, disable_tqdm=False):
        out = []
        for r in requests:
            self.prompts.append(r.args[0])
            text = self.reply
            for stop in r.args[1].get("until") or []:
                text = text.split(stop)[0]
            out.append(text)
        return out


def test_freebase_generation_opening_with_a_newline_is_scored(tm):
    task = tm.load(["kick_freebase"])["tasks"]["kick_freebase"]
    answer = task.test_docs()[0]["answers"][0]
    out = simple_evaluate(model=StoppingLM(f"\n{answer}\nPlease give answer to this question: x"),
                          tasks=["kick_freebase"], task_manager=tm, limit=1, bootstrap_iters=0)
    res = out["results"]["kick_freebase"]
    assert res["exact_match,none"] == 1.0 and res["contains,none"] == 1.0
    assert task.VERSION == 2.0


def test_freebase_reference_prompt_keeps_the_trailing_space(tm):
    task = tm.load(["kick_freebase_reference"])["tasks"]["kick_freebase_reference"]
    doc = task.test_docs()[0]
    assert task.doc_to_text(doc) == f"Please give answer to this question: {doc['question']}\nThe answer is "
