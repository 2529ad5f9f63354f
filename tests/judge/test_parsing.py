"""Table-driven tests of the judge reply parsers: a value or None with a reason, never an exception."""

import pytest

from kick_tasks.judge.parsing import parse_score, parse_verdict


@pytest.mark.parametrize("text, value", [
    ("A is clearer.\n[[A]]", "A"),
    ("[[B]]", "B"),
    ("Both fine. [[C]]", "tie"),
    ("verdict: [[ b ]]", "B"),
    ("I said [[A]] and I stand by [[A]]", "A"),
])
def test_verdict_ok(text, value):
    assert parse_verdict(text).value == value


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    (None, "empty"),
    ("A is better", "no [[A]]"),
    ("[[A]] no wait [[B]]", "conflicting"),
    ("[[D]]", "no [[A]]"),
    ("[[A", "no [[A]]"),
])
def test_verdict_none(text, reason):
    parsed = parse_verdict(text)
    assert parsed.value is None and reason in parsed.reason


@pytest.mark.parametrize("text, value", [
    ("Good answer. Rating: [[8]]", 8.0),
    ("[[7.5]]", 7.5),
    ("[[ 10 ]]", 10.0),
    ("[[3/10]]", 3.0),
    ("[[1]] ... final [[1]]", 1.0),
])
def test_score_ok(text, value):
    assert parse_score(text).value == value


@pytest.mark.parametrize("text, reason", [
    ("eight out of ten", "no [[score]]"),
    ("[[11]]", "outside"),
    ("[[0]]", "outside"),
    ("[[5]] or maybe [[6]]", "conflicting"),
    ("[[seven]]", "no [[score]]"),
    ("   ", "empty"),
])
def test_score_none(text, reason):
    parsed = parse_score(text)
    assert parsed.value is None and reason in parsed.reason
