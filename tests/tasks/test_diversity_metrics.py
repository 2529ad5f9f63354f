"""distinct-n, repetition rate and self-BLEU on hand-made texts with known answers."""

import math

import pytest

from kick_tasks.diversity import count_true, distinct_n, diversity_metrics, mean_defined, repetition_rate, self_bleu, words


def test_words_lowercase_no_punctuation():
    assert words("The cat, the CAT! It's here.") == ["the", "cat", "the", "cat", "it's", "here"]


@pytest.mark.parametrize("text, n, expected", [
    ("a b c d", 1, 1.0),
    ("a a a a", 1, 0.25),
    ("a b a b", 2, 2 / 3),          # ab ba ab
    ("the cat the cat", 1, 0.5),
    ("one two", 3, None),
    ("", 1, None),
])
def test_distinct_n(text, n, expected):
    assert distinct_n(text, n) == (pytest.approx(expected) if expected is not None else None)


def test_repetition_rate_counts_repeated_four_grams():
    assert repetition_rate("i think that is it") == 0.0
    looping = "i think that i think that i think that"   # 9 words, 6 four-grams, 3 unique
    assert repetition_rate(looping) == pytest.approx(0.5)
    assert repetition_rate("too short") is None


def test_degenerate_text_scores_worse_than_varied_text():
    varied = diversity_metrics("Compression removes weights; the model then answers with less detail.")
    loop = diversity_metrics("the answer is the answer is the answer is the answer is the answer")
    assert loop["distinct_2"] < varied["distinct_2"] and loop["repetition_4"] > varied["repetition_4"]


def test_self_bleu_identical_vs_distinct():
    same = ["the quick brown fox jumps over the lazy dog"] * 3
    assert self_bleu(same) == pytest.approx(1.0)
    distinct = ["alpha beta gamma delta", "one two three four", "red green blue yellow"]
    assert self_bleu(distinct) < 0.05
    assert self_bleu(["only one"]) is None and self_bleu(["", "x y"]) is None


def test_aggregations_skip_missing_values():
    assert mean_defined([1.0, None, 3.0]) == 2.0
    assert math.isnan(mean_defined([None, None]))
    assert count_true([True, False, 1, 0]) == 2
