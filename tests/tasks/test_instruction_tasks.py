"""kick_instruct / kick_mtbench through lm-eval's evaluate() with a scripted LM and a loopback judge."""

import logging

import pytest
from lm_eval.api.model import LM
from lm_eval.evaluator import simple_evaluate
from lm_eval.tasks import TaskManager

from kick_tasks import task_yamls_dir
from kick_testlib.loopback import LoopbackJudgeServer


class ScriptedLM(LM):
    """Answers 'answer <n>: <first words of the prompt>' and records every prompt it saw."""

    def __init__(self):
        super().__init__()
        self.prompts = []

    def generate_until(self, requests, disable_tqdm=False):
        out = []
        for req in requests:
            self.prompts.append(req.args[0])
            out.append(f"answer {len(self.prompts)} is here. the end the end the end the end")
        return out

    def loglikelihood(self, requests, disable_tqdm=False):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError


def judge_reply(body):
    text = body["messages"][-1]["content"]
    return "[[A]]" if "<<Answer A>>" in text else "[[7]]"


@pytest.fixture
def judge_env(monkeypatch, tmp_path):
    with LoopbackJudgeServer(judge_reply) as server:
        monkeypatch.setenv("KICK_JUDGE_MODEL", "loopback-judge")
        monkeypatch.setenv("KICK_JUDGE_BASE_URL", server.base_url)
        monkeypatch.setenv("KICK_JUDGE_CACHE_DIR", str(tmp_path / "judge-cache"))
        yield server


def task_manager():
    return TaskManager(include_path=str(task_yamls_dir()), include_defaults=False)


def run(task, lm, limit=3):
    tm = task_manager()
    out = simple_evaluate(model=lm, tasks=[task], task_manager=tm, limit=limit,
                          bootstrap_iters=0, log_samples=True)
    return out["results"][task], out["samples"][task]


def test_instruct_pairwise_judged_in_one_batch(judge_env):
    res, samples = run("kick_instruct", ScriptedLM())
    assert len(judge_env.requests) == 6          # 3 items x 2 orders, all sent by the task's batch
    # A judge that always says [[A]] is position-biased: every verdict becomes an inconsistent tie.
    assert res["judge_tie_rate,none"] == 1.0 and res["judge_inconsistency_rate,none"] == 1.0
    assert res["judge_score,none"] == 0.5 and res["judge_unparsed,none"] == 0
    assert 0 < res["distinct_1,none"] < 1 and res["repetition_4,none"] > 0
    assert res["self_bleu,none"] > 0
    orders = samples[0]["filtered_resps"][0]["judge"]["orders"]
    assert set(orders) == {"candidate_first", "reference_first"}


def test_instruct_rerun_hits_cache(judge_env):
    run("kick_instruct", ScriptedLM(), limit=2)
    sent = len(judge_env.requests)
    run("kick_instruct", ScriptedLM(), limit=2)
    assert len(judge_env.requests) == sent


def test_mtbench_second_turn_sees_own_first_answer(judge_env):
    lm = ScriptedLM()
    res, samples = run("kick_mtbench", lm, limit=2)
    assert len(lm.prompts) == 4                  # 2 first turns, then 2 second turns
    first_answers = {f"answer {i} is here" for i in (1, 2)}
    for prompt in lm.prompts[2:]:
        assert any(a in prompt for a in first_answers)
        assert prompt.count("User:") == 2 and prompt.rstrip().endswith("Assistant:")
    assert res["judge_score,none"] == 7.0 and res["judge_score_turn2,none"] == 7.0
    assert len(judge_env.requests) == 4
    turn2 = [r["messages"][-1]["content"] for r in judge_env.requests if "<<Conversation>>" in r["messages"][-1]["content"]]
    assert len(turn2) == 2 and all("second answer" in t for t in turn2)
    assert samples[0]["filtered_resps"][0]["turns"][0].startswith("answer")


def test_mtbench_references_given_for_math(judge_env):
    tm = task_manager()
    task = tm.load(["kick_mtbench"])["tasks"]["kick_mtbench"]
    docs = list(task.test_docs())
    math_ids = [i for i, d in enumerate(docs) if d["category"] in ("math", "reasoning", "coding")]
    assert len(math_ids) == 30 and all(docs[i]["reference_turns"] for i in math_ids)
    simple_evaluate(model=ScriptedLM(), tasks=["kick_mtbench"], task_manager=tm,
                    samples={"kick_mtbench": math_ids[:1]}, bootstrap_iters=0)
    assert all("<<Reference answer" in r["messages"][-1]["content"] for r in judge_env.requests)


def test_no_judge_configured_runs_and_says_so(monkeypatch, caplog):
    monkeypatch.delenv("KICK_JUDGE_MODEL", raising=False)
    caplog.set_level(logging.WARNING)
    res, _ = run("kick_instruct", ScriptedLM(), limit=2)
    assert "judge scores skipped" in caplog.text
    assert "judge_score,none" not in res and "distinct_2,none" in res


def test_mtbench_reaches_the_model_through_the_explicit_registry(judge_env):
    """The second turn's model comes from kick's registry (filled around lm-eval's evaluate), not from
    the call stack: a direct call of the unwrapped evaluate() fails clearly unless wrapped."""
    import lm_eval.evaluator as evaluator
    from lm_eval.tasks import get_task_dict

    from kick_tasks.judge.lmeval import current_lm, running_model

    tasks = get_task_dict(["kick_mtbench"], task_manager())  # building the task installs the hook
    assert getattr(evaluator.evaluate, "_kick_running_model", False)
    unwrapped = evaluator.evaluate.__wrapped__
    with pytest.raises(RuntimeError, match="running_model"):
        unwrapped(ScriptedLM(), tasks, limit=1, bootstrap_iters=0)
    lm = ScriptedLM()
    with running_model(lm):
        assert current_lm() is lm
        unwrapped(lm, get_task_dict(["kick_mtbench"], task_manager()), limit=1, bootstrap_iters=0)
    assert current_lm() is None and len(lm.prompts) == 2 and "answer 1 is here" in lm.prompts[1]
