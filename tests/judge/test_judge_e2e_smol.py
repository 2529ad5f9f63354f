"""End to end with a real model on both sides: SmolLM2 answers through lm-eval's HFLM, and a
loopback OpenAI-compatible server judges with the same SmolLM2 through transformers."""

import threading

import pytest
import torch
from lm_eval.evaluator import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from kick_tasks import task_yamls_dir
from kick_testlib.loopback import LoopbackJudgeServer


def smol_judge(model, tokenizer):
    """Responder: chat-template the judge messages, force the reply to open with '[[' and let
    the model pick the verdict / rating token (greedy, 3 new tokens)."""
    lock = threading.Lock()

    def respond(body):
        prompt = tokenizer.apply_chat_template(body["messages"], tokenize=False,
                                               add_generation_prompt=True) + "[["
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids[:, -1024:]
        with lock, torch.no_grad():
            out = model.generate(ids, max_new_tokens=3, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)
        return "[[" + tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    return respond


@pytest.mark.slow
def test_smol_answers_and_smol_judges(smol, monkeypatch, tmp_path):
    model, tokenizer = smol
    with LoopbackJudgeServer(smol_judge(model, tokenizer)) as server:
        monkeypatch.setenv("KICK_JUDGE_MODEL", "smollm2-135m-loopback")
        monkeypatch.setenv("KICK_JUDGE_BASE_URL", server.base_url)
        monkeypatch.setenv("KICK_JUDGE_CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.setenv("KICK_JUDGE_CONCURRENCY", "2")
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1, max_length=2048)
        tm = TaskManager(include_path=str(task_yamls_dir()), include_defaults=False)
        out = simple_evaluate(model=lm, tasks=["kick_instruct", "kick_mtbench"], task_manager=tm,
                              limit=1, gen_kwargs="max_gen_toks=8", apply_chat_template=True,
                              bootstrap_iters=0, log_samples=True)
    instruct, mtbench = out["results"]["kick_instruct"], out["results"]["kick_mtbench"]
    # Every judge request got a reply; each item is judged, counted unparsed, or counted failed.
    replies = server.requests
    assert len(replies) >= 2 + 2      # both orders for the Vicuna item, both turns for MT-Bench
    assert instruct["judge_failed,none"] == 0 and mtbench["judge_failed,none"] == 0
    samples = out["samples"]["kick_instruct"]
    for s in samples:
        rec = s["filtered_resps"][0]["judge"]
        assert rec["status"] in ("ok", "unparsed")
        assert (rec["outcome"] is None) == (rec["status"] != "ok")
    # MT-Bench turn 2 went through the chat template with the model's own first answer.
    for s in out["samples"]["kick_mtbench"]:
        resp = s["filtered_resps"][0]
        assert len(resp["turns"]) == 2
        assert resp["turns"][0].strip() in resp["turn2_prompt"]
        assert resp["turn2_prompt"].count("<|im_start|>user") == 2
        assert {"turn1", "turn2"} == set(resp["judge"])
    stats = [s["filtered_resps"][0]["judge"]["orders"] for s in samples]
    assert all(o["status"] in ("ok", "unparsed") for order in stats for o in order.values())
