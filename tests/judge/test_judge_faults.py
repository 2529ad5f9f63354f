"""Judge faults that must not cost a run: refused keys found before generation, refusals mid-run
counted as judge_failed, unreadable replies asked again, verdicts kept apart per endpoint, and
the judge's identity and counters in lm-eval's results (never the key)."""

import json
import threading

import pytest
from lm_eval.api.model import LM
from lm_eval.evaluator import simple_evaluate
from lm_eval.tasks import TaskManager

from kick_tasks import task_yamls_dir
from kick_tasks.judge.client import (
    JudgeClient,
    JudgeConfig,
    JudgeConfigError,
    JudgeRequest,
    check_endpoint,
)
from kick_tasks.judge.grading import grade_single
from kick_tasks.judge.prompts import single_messages
from kick_testlib.loopback import Fault, LoopbackJudgeServer


def score_requests(n):
    return [JudgeRequest(single_messages(f"question {i}", f"answer {i}"), "score", (f"answer {i}",))
            for i in range(n)]


def client_for(server, tmp_path, **kw):
    cfg = {"model": "judge-x", "base_url": server.base_url, "api_key": "sk-test-secret",
           "concurrency": 1, "timeout": 2.0, "max_retries": 2, "backoff": 0.01,
           "cache_dir": str(tmp_path / "cache")}
    cfg.update(kw)
    return JudgeClient(JudgeConfig(**cfg))


class RecordingLM(LM):
    """Answers every prompt with a fixed sentence; ``on_generate`` runs once generation starts."""

    def __init__(self, on_generate=None):
        super().__init__()
        self.prompts = []
        self.on_generate = on_generate

    def generate_until(self, requests, disable_tqdm=False):
        if self.on_generate is not None:
            self.on_generate()
        self.prompts += [r.args[0] for r in requests]
        return ["A short answer. It ends here." for _ in requests]

    def loglikelihood(self, requests, disable_tqdm=False):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError


def any_reply(body):
    text = body["messages"][-1]["content"]
    return "[[A]]" if "<<Answer A>>" in text else "[[7]]"


@pytest.fixture(autouse=True)
def _fresh_endpoint_checks(monkeypatch):
    """Each test checks its own server: a later server may reuse an earlier one's port."""
    from kick_tasks.judge import client

    monkeypatch.setattr(client, "_checked", {})


@pytest.fixture
def judge_env(monkeypatch, tmp_path):
    def start(responder=any_reply, models=("loopback-judge",)):
        server = LoopbackJudgeServer(responder, models=models).start()
        started.append(server)
        monkeypatch.setenv("KICK_JUDGE_MODEL", "loopback-judge")
        monkeypatch.setenv("KICK_JUDGE_BASE_URL", server.base_url)
        monkeypatch.setenv("KICK_JUDGE_API_KEY", "sk-never-shown")
        monkeypatch.setenv("KICK_JUDGE_CACHE_DIR", str(tmp_path / "judge-cache"))
        monkeypatch.setenv("KICK_JUDGE_MAX_RETRIES", "1")
        monkeypatch.setenv("KICK_JUDGE_BACKOFF", "0.01")
        monkeypatch.setenv("KICK_JUDGE_CONCURRENCY", "1")
        return server

    started = []
    yield start
    for server in started:
        server.stop()


def evaluate(task, lm, limit=2):
    tm = TaskManager(include_path=str(task_yamls_dir()), include_defaults=False)
    return simple_evaluate(model=lm, tasks=[task], task_manager=tm, limit=limit,
                           bootstrap_iters=0, log_samples=True)


# ------------------------------------------------------------------ 1: refusals


@pytest.mark.parametrize("status, match", [(401, "credentials"), (403, "credentials"),
                                           (404, "HTTP 404"), (400, "HTTP 400")])
def test_refused_endpoint_stops_the_run_before_generation(judge_env, status, match):
    server = judge_env()
    # a 404 on GET /models only means "no listing": the one-token completion is refused as well
    server.faults.extend([Fault("status", status)] * 2)
    lm = RecordingLM()
    with pytest.raises(JudgeConfigError, match=match):
        evaluate("kick_instruct", lm)
    assert lm.prompts == []                             # refused before any generation
    assert len(server.requests) == (1 if status == 404 else 0)


def test_endpoint_without_model_listing_is_checked_with_one_token(judge_env, tmp_path):
    server = judge_env()
    server.faults.append(Fault("status", 501))       # GET /models unsupported: fall back
    cfg = JudgeConfig(model="m", base_url=server.base_url, cache_dir=None, backoff=0.01)
    assert JudgeClient(cfg).check() == "completion"
    assert [r["max_tokens"] for r in server.requests] == [1]
    server.faults.extend([Fault("status", 501), Fault("status", 401)])
    with pytest.raises(JudgeConfigError, match="credentials"):
        JudgeClient(cfg).check()


def test_unreachable_endpoint_is_refused_clearly(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = JudgeConfig(model="m", base_url=f"http://127.0.0.1:{port}/v1", cache_dir=None,
                      max_retries=1, backoff=0.01)
    with pytest.raises(JudgeConfigError, match="not reachable.*KICK_JUDGE_DISABLE"):
        check_endpoint(cfg)


def test_endpoint_check_runs_once_per_process(judge_env):
    server = judge_env()
    cfg = JudgeConfig(model="loopback-judge", base_url=server.base_url, cache_dir=None)
    assert check_endpoint(cfg) == "models" and check_endpoint(cfg) == "models"
    assert server.model_listings == 1


def test_refusal_mid_run_is_counted_and_results_are_written(judge_env):
    server = judge_env()
    # the key is revoked while the model generates: every judge request is refused
    lm = RecordingLM(on_generate=lambda: server.faults.extend([Fault("status", 401)] * 20))
    out = evaluate("kick_instruct", lm, limit=3)
    res, samples = out["results"]["kick_instruct"], out["samples"]["kick_instruct"]
    assert res["judge_failed,none"] == 3 and res["judge_unparsed,none"] == 0
    assert res["distinct_1,none"] > 0                  # automatic metrics survive
    assert len(samples) == 3
    assert len(server.requests) == 1                   # the first refusal stops further sending
    record = out["configs"]["kick_instruct"]["metadata"]["kick_judge"]
    assert "credentials" in record["refused"] and record["failed"] == 6  # 3 items x 2 orders
    for s in samples:
        assert s["filtered_resps"][0]["judge"]["status"] == "failed"


def test_refusal_mid_run_mtbench_and_summarization_do_not_raise(judge_env):
    server = judge_env()
    lm = RecordingLM(on_generate=lambda: server.faults.extend([Fault("status", 403)] * 20))
    out = evaluate("kick_summarization_small", lm)
    assert out["results"]["kick_summarization_small"]["judge_failed,none"] == 2
    out = evaluate("kick_mtbench", lm)
    assert out["results"]["kick_mtbench"]["judge_failed,none"] == 2


def test_direct_client_still_raises_on_refusal(judge_env, tmp_path):
    server = judge_env()
    server.faults.append(Fault("status", 401))
    with pytest.raises(JudgeConfigError, match="credentials"):
        grade_single(client_for(server, tmp_path), score_requests(1))


# ------------------------------------------------------------------ 2: unparsed replies


def test_unparsed_replies_are_asked_again_on_rerun(tmp_path):
    healthy = threading.Event()

    def responder(body):
        return "[[6]]" if healthy.is_set() else "I cannot decide."

    requests = score_requests(4)
    with LoopbackJudgeServer(responder) as server:
        first = grade_single(client_for(server, tmp_path), requests[:2])
        assert [r["status"] for r in first] == ["unparsed", "unparsed"]
        grade_single(client_for(server, tmp_path), requests[2:])  # garbage again, for 2 more
        sent = len(server.requests)
        healthy.set()
        client = client_for(server, tmp_path)
        second = grade_single(client, requests)
    assert sent == 8                                    # 4 items x (reply + reminder)
    assert len(server.requests) - sent == 4             # every unparsed one asked again, once
    assert [r["score"] for r in second] == [6.0] * 4
    assert client.stats.unparsed == 0 and client.stats.cache_hits == 0


def test_old_unparsed_cache_records_are_not_reused(tmp_path):
    with LoopbackJudgeServer(lambda body: "[[3]]") as server:
        client = client_for(server, tmp_path)
        [request] = score_requests(1)
        client.cache.put(client._key(request), {"status": "unparsed", "value": None,
                                                "reason": "x", "reply": "?", "reformatted": True})
        [rec] = grade_single(client, [request])
    assert rec["score"] == 3.0 and len(server.requests) == 1


# ------------------------------------------------------------------ 21: cache key, samples JSON


def test_verdicts_are_kept_apart_per_endpoint(tmp_path):
    requests = score_requests(2)
    with LoopbackJudgeServer(lambda body: "[[2]]") as one, LoopbackJudgeServer(lambda body: "[[9]]") as two:
        a = grade_single(client_for(one, tmp_path), requests)
        b = grade_single(client_for(two, tmp_path), requests)   # same model name, same cache
        again = client_for(one, tmp_path)
        c = grade_single(again, requests)
    assert [r["score"] for r in a] == [2.0, 2.0] and [r["score"] for r in b] == [9.0, 9.0]
    assert len(two.requests) == 2 and [r["score"] for r in c] == [2.0, 2.0]
    assert again.stats.cache_hits == 2


def test_credentials_in_the_url_are_not_recorded():
    cfg = JudgeConfig(model="m", base_url="https://user:hunter2@judge.example:8443/v1/", cache_dir=None)
    assert cfg.endpoint == "https://judge.example:8443/v1" and cfg.host == "judge.example:8443"
    assert "hunter2" not in json.dumps(cfg.to_dict())


def test_samples_hold_the_judge_record_as_json(judge_env):
    from lm_eval.utils import sanitize_list

    judge_env()
    out = evaluate("kick_instruct", RecordingLM(), limit=1)
    [sample] = out["samples"]["kick_instruct"]
    # lm-eval's samples writer turns responses into str(); that string must be JSON
    [written] = sanitize_list(sample["filtered_resps"])
    record = json.loads(written)
    assert record["judge"]["orders"]["candidate_first"]["status"] == "ok"
    assert record["text"] == "A short answer. It ends here."


# ------------------------------------------------------------------ 3: results record the judge


@pytest.mark.slow
def test_results_file_names_the_judge_and_never_the_key(judge_env, tmp_path, subprocess_env):
    import os
    import subprocess
    import sys

    server = judge_env(responder=lambda body: "I cannot decide.")
    env = {**subprocess_env, **{k: v for k, v in os.environ.items() if k.startswith("KICK_JUDGE_")}}
    out_dir = tmp_path / "out"
    cmd = [sys.executable, "-m", "lm_eval", "--model", "dummy", "--tasks", "kick_instruct",
           "--include_path", str(task_yamls_dir()), "--limit", "2", "--output_path", str(out_dir),
           "--log_samples"]
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [results_file] = out_dir.rglob("results_*.json")
    data = json.loads(results_file.read_text())
    record = data["configs"]["kick_instruct"]["metadata"]["kick_judge"]
    host = server.base_url.split("//")[1].split("/")[0]
    assert record["model"] == "loopback-judge" and record["base_url_host"] == host
    assert record["prompt_version"].startswith("kick-judge-")
    assert record["unparsed"] == 4 and record["failed"] == 0 and record["reformat_retries"] == 4
    assert record["http_requests"] == 8 and record["retries"] == 0 and record["api_key_set"] is True
    assert data["results"]["kick_instruct"]["judge_unparsed,none"] == 2
    [samples_file] = out_dir.rglob("samples_kick_instruct_*.jsonl")
    for line in samples_file.read_text().splitlines():
        resp = json.loads(json.loads(line)["filtered_resps"][0])
        assert resp["judge"]["status"] == "unparsed"
    everything = proc.stdout + proc.stderr + "".join(p.read_text() for p in out_dir.rglob("*") if p.is_file())
    assert "sk-never-shown" not in everything
