"""The judge client against a real HTTP server on 127.0.0.1: requests, both orders, cache, concurrency, faults."""

import socket
import threading
import time

import pytest

from kick_tasks.judge.client import JudgeClient, JudgeConfig, JudgeConfigError, JudgeRequest
from kick_tasks.judge.grading import PairwiseItem, grade_pairwise, grade_single
from kick_tasks.judge.prompts import single_messages
from kick_testlib.loopback import Fault, LoopbackJudgeServer
from kick_testlib.reference import pairwise_summary


def prefers_longer(body):
    """A judge that prefers the longer answer: lets tests predict verdicts in both orders."""
    text = body["messages"][-1]["content"]
    a = text.split("<<Answer A>>")[1].split("<</Answer A>>")[0]
    b = text.split("<<Answer B>>")[1].split("<</Answer B>>")[0]
    return "Reasoning...\n" + ("[[A]]" if len(a) > len(b) else "[[B]]" if len(b) > len(a) else "[[C]]")


def always(reply):
    return lambda body: reply


def make_client(server, tmp_path, **kw):
    cfg = dict(model="judge-x", base_url=server.base_url if server else "http://127.0.0.1:9/v1",
               api_key="sk-test-secret", concurrency=4, timeout=2.0, max_retries=3, backoff=0.01,
               cache_dir=str(tmp_path / "cache"))
    cfg.update(kw)
    return JudgeClient(JudgeConfig(**cfg))


def score_requests(n):
    return [JudgeRequest(single_messages(f"question {i}", f"answer {i}"), "score", (f"answer {i}",))
            for i in range(n)]


def test_request_shape_and_key_in_header_only(tmp_path, caplog):
    caplog.set_level("DEBUG")
    with LoopbackJudgeServer(always("fine [[7]]")) as server:
        client = make_client(server, tmp_path)
        [rec] = grade_single(client, score_requests(1))
    assert rec == {"score": 7.0, "status": "ok", "reason": "", "cached": False}
    body, headers = server.requests[0], server.headers[0]
    assert body["model"] == "judge-x" and body["temperature"] == 0
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert headers["authorization"] == "Bearer sk-test-secret"
    assert "sk-test-secret" not in repr(client.config) and "sk-test-secret" not in str(client.config.to_dict())
    assert "sk-test-secret" not in caplog.text
    assert not any("sk-test-secret" in p.read_text() for p in (tmp_path / "cache").rglob("*.json"))


def test_pairwise_both_orders_consistency(tmp_path):
    items = [PairwiseItem("q1", "a long, detailed candidate answer", "short"),
             PairwiseItem("q2", "tiny", "a long, detailed reference answer"),
             PairwiseItem("q3", "same", "same")]
    with LoopbackJudgeServer(prefers_longer) as server:
        records = grade_pairwise(make_client(server, tmp_path), items)
    # q3's two orders are the same prompt: sent once, whatever the thread timing
    assert len(server.requests) == 5
    firsts = [r["messages"][-1]["content"] for r in server.requests]
    assert sum("<<Answer A>>\na long, detailed candidate" in f for f in firsts) == 1
    assert sum("<<Answer B>>\na long, detailed candidate" in f for f in firsts) == 1
    assert [r["outcome"] for r in records] == ["win", "loss", "tie"]
    assert all(r["consistent"] for r in records)


def test_position_bias_becomes_inconsistent_tie(tmp_path):
    with LoopbackJudgeServer(always("[[A]]")) as server:
        records = grade_pairwise(make_client(server, tmp_path), [PairwiseItem("q", "x", "y")] * 2)
    assert [r["outcome"] for r in records] == ["tie", "tie"]
    summary = pairwise_summary(records)
    assert summary["inconsistency_rate"] == 1.0 and summary["tie_rate"] == 1.0


def test_cache_hits_on_rerun_send_zero_requests(tmp_path):
    items = [PairwiseItem(f"q{i}", "cand" * i, "ref") for i in range(5)]
    with LoopbackJudgeServer(prefers_longer) as server:
        first = grade_pairwise(make_client(server, tmp_path), items)
        sent = len(server.requests)
        client = make_client(server, tmp_path)
        second = grade_pairwise(client, items)
    assert sent == 10 and len(server.requests) == sent
    assert client.stats.cache_hits == 10
    assert [r["outcome"] for r in first] == [r["outcome"] for r in second]


def test_interrupted_run_resumes(tmp_path):
    requests = score_requests(6)
    with LoopbackJudgeServer(always("[[5]]")) as server:
        grade_single(make_client(server, tmp_path), requests[:4])
        grade_single(make_client(server, tmp_path), requests)
    assert len(server.requests) == 6


def test_concurrency_overlaps_and_is_bounded(tmp_path):
    # overlap is observed on the server (requests in flight at once), not timed: speed is benchmarked
    with LoopbackJudgeServer(always("[[5]]"), latency=0.2) as server:
        records = grade_single(make_client(server, tmp_path, concurrency=4), score_requests(8))
    assert server.peak_in_flight == 4 and len(server.requests) == 8
    assert [r["score"] for r in records] == [5.0] * 8


@pytest.mark.parametrize("fault", [
    Fault("status", 429, {"Retry-After": "0.05"}),
    Fault("status", 500),
    Fault("status", 503),
    Fault("stall", seconds=5.0),
    Fault("malformed"),
])
def test_faults_are_retried(tmp_path, fault):
    with LoopbackJudgeServer(always("[[6]]")) as server:
        server.faults.extend([fault, fault])
        # timeouts well above a loaded machine's reply time, so only the injected stall times out
        client = make_client(server, tmp_path, timeout=2.0, concurrency=1)
        records = grade_single(client, score_requests(3))
    assert [r["score"] for r in records] == [6.0, 6.0, 6.0]
    assert client.stats.retries == 2 and client.stats.ok == 3


def test_retry_after_is_honoured(tmp_path):
    sleeps = []
    with LoopbackJudgeServer(always("[[6]]")) as server:
        server.faults.append(Fault("status", 429, {"Retry-After": "0.3"}))
        cfg = JudgeConfig(model="m", base_url=server.base_url, backoff=0.01, concurrency=1,
                          cache_dir=None)
        client = JudgeClient(cfg, sleep=lambda s: (sleeps.append(s), time.sleep(s)))
        grade_single(client, score_requests(1))
    assert sleeps and sleeps[0] == pytest.approx(0.3)


def test_unparseable_verdict_gets_one_reminder_then_counted(tmp_path):
    replies = iter(["I like it.", "[[8]]", "no idea", "still no idea"])
    lock = threading.Lock()

    def responder(body):
        with lock:
            return next(replies)

    with LoopbackJudgeServer(responder) as server:
        client = make_client(server, tmp_path, concurrency=1)
        records = grade_single(client, score_requests(2))
    assert records[0]["score"] == 8.0
    assert records[1]["score"] is None and records[1]["status"] == "unparsed"
    assert "after reminder" in records[1]["reason"]
    reminder = server.requests[1]["messages"]
    assert reminder[-2] == {"role": "assistant", "content": "I like it."}
    assert "[[6]]" in reminder[-1]["content"]
    assert client.stats.unparsed == 1 and client.stats.reformat_retries == 2


def test_connection_refused_is_counted_not_lost(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = make_client(None, tmp_path, base_url=f"http://127.0.0.1:{port}/v1", max_retries=2)
    records = grade_pairwise(client, [PairwiseItem("q", "a", "b")])
    assert records[0]["outcome"] is None and records[0]["status"] == "failed"
    assert "Connection" in records[0]["reason"] or "refused" in records[0]["reason"].lower()
    assert client.stats.failed == 2 and client.stats.http_requests == 6
    assert pairwise_summary(records)["failed"] == 1


def test_mixed_faults_under_concurrency_none_lost(tmp_path):
    with LoopbackJudgeServer(prefers_longer) as server:
        server.faults.extend([Fault("status", 429, {"Retry-After": "0"}), Fault("status", 500),
                              Fault("malformed"), Fault("stall", seconds=5.0), Fault("status", 502)])
        client = make_client(server, tmp_path, timeout=2.0, concurrency=4)
        items = [PairwiseItem(f"q{i}", "x" * (i % 3 + 1), "xx") for i in range(10)]
        records = grade_pairwise(client, items)
    assert all(r["status"] == "ok" for r in records)
    # 20 prompts, of which q1/q4/q7 ("xx" vs "xx") are the same in both orders: 17 sent, 5 retried
    assert client.stats.retries == 5 and client.stats.ok == 17 and client.stats.http_requests == 22


def test_bad_credentials_are_fatal(tmp_path):
    with LoopbackJudgeServer(always("[[1]]")) as server:
        server.faults.extend([Fault("status", 401)] * 4)
        with pytest.raises(JudgeConfigError, match="credentials"):
            grade_single(make_client(server, tmp_path, concurrency=1), score_requests(1))


def test_config_from_env():
    env = {"KICK_JUDGE_MODEL": "gpt-4o", "KICK_JUDGE_BASE_URL": "http://127.0.0.1:1/v1",
           "OPENAI_API_KEY": "sk-x", "KICK_JUDGE_CONCURRENCY": "3"}
    cfg = JudgeConfig.from_env({"judge_timeout": 5}, env=env)
    assert (cfg.model, cfg.concurrency, cfg.timeout, cfg.api_key) == ("gpt-4o", 3, 5.0, "sk-x")
    assert JudgeConfig.from_env({}, env={}) is None
    assert JudgeConfig.from_env({}, env={**env, "KICK_JUDGE_DISABLE": "1"}) is None
    # the verdict cache follows kick's cache root unless given its own folder, or turned off
    assert JudgeConfig.from_env({}, env={**env, "KICK_CACHE_DIR": "/srv/kc"}).cache_dir == "/srv/kc/judge"
    assert JudgeConfig.from_env({"judge_cache_dir": "/v"}, env={**env, "KICK_CACHE_DIR": "/kc"}).cache_dir == "/v"
    assert JudgeConfig.from_env({}, env={**env, "KICK_JUDGE_CACHE": "0"}).cache_dir is None
    with pytest.raises(JudgeConfigError, match="api_key"):
        JudgeConfig.from_env({"judge_api_key": "sk"}, env=env)
    with pytest.raises(JudgeConfigError, match="KICK_JUDGE_CONCURRENCY='0'; accepted: an integer >= 1"):
        JudgeConfig.from_env({}, env={**env, "KICK_JUDGE_CONCURRENCY": "0"})


@pytest.mark.parametrize("name, value", [
    ("KICK_JUDGE_CONCURRENCY", "abc"), ("KICK_JUDGE_TIMEOUT", "0"), ("KICK_JUDGE_MAX_RETRIES", "-1"),
    ("KICK_JUDGE_BACKOFF", "nan"), ("KICK_JUDGE_MAX_TOKENS", "2.5"), ("KICK_JUDGE_DISABLE", "maybe"),
    ("KICK_JUDGE_CACHE", "perhaps"), ("KICK_JUDGE_BASE_URL", "ftp://user:secret@judge.example/v1"),
])
def test_a_bad_judge_variable_is_refused_as_kick_refuses_it_everywhere(name, value):
    from kick_common.env import EnvError, check_environment

    env = {"KICK_JUDGE_MODEL": "m", "KICK_JUDGE_API_KEY": "sk-secret", name: value}
    with pytest.raises(EnvError) as everywhere:
        check_environment(env)
    with pytest.raises(JudgeConfigError) as judge:
        JudgeConfig.from_env({}, env=env)
    assert str(judge.value) == str(everywhere.value)
    assert name in str(judge.value) and "secret" not in str(judge.value)


def test_bad_judge_metadata_and_openai_url_are_refused_by_the_same_readers():
    env = {"KICK_JUDGE_MODEL": "m"}
    with pytest.raises(JudgeConfigError, match=r"^kick: invalid task metadata judge_timeout='soon'; accepted: seconds > 0"):
        JudgeConfig.from_env({"judge_timeout": "soon"}, env=env)
    assert JudgeConfig.from_env({"judge_cache": False, "judge_max_tokens": 4.0}, env=env).max_tokens == 4
    with pytest.raises(JudgeConfigError, match=r"OPENAI_BASE_URL='ftp://judge.example…'") as err:
        JudgeConfig.from_env({}, env={**env, "OPENAI_BASE_URL": "ftp://u:hunter2@judge.example/v1"})
    assert "hunter2" not in str(err.value)
    with pytest.raises(JudgeConfigError, match="not 'ftp'") as err:
        JudgeConfig(model="m", base_url="ftp://u:hunter2@judge.example/v1")
    assert "hunter2" not in str(err.value)
