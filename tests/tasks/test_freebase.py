"""kick_freebase: bundled data, the LLM-KICK prompt, and scoring that looks only at the model's answer."""

import pytest

from kick_tasks import freebase as freebase_qa
from kick_tasks.normalize import contains, exact_match, normalize_answer


@pytest.fixture(scope="module")
def freebase():
    return freebase_qa.load_freebaseqa()["test"]


def test_bundled_eval_set_is_deduplicated_with_all_aliases(freebase):
    questions = freebase["question"]
    assert len(questions) == 4000 == len(set(questions))
    by_question = dict(zip(questions, freebase["answers"]))
    # "Taming of the Shrew" style alias lists come from the .tab rows of the same question
    assert sum(len(a) > 1 for a in by_question.values()) > 500
    assert by_question["Who wrote \"Uncle Tom's Cabin\"?"] == ["harriet beecher stowe"]


def test_prompt_snapshot(freebase):
    doc = freebase[0]
    assert freebase_qa.doc_to_text(doc) == (
        "Please give answer to this question: 100 pesewas equalling 1 cedi are the units of currency "
        "of which African country?\nThe answer is"
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Taming of the Shrew!", "taming of shrew"),
        ("  U.S.A. ", "u s"),  # punctuation becomes space; the lone "a" is an article
        ("Ludwig_van Beethoven", "ludwig van beethoven"),
        ("\u2018Reds\u2019", "reds"),
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    "generation, aliases, em, cont",
    [
        (" Ghana.", ["ghana"], 1, 1),
        (" the Ghana", ["ghana"], 1, 1),
        ("The answer is Paris.", ["paris"], 1, 1),
        (": Italy", ["italy"], 1, 1),
        (" Ghana, in West Africa.", ["ghana"], 0, 1),
        (" Ghanaian money", ["ghana"], 0, 0),  # containment is on word boundaries
        ("", ["ghana"], 0, 0),  # an empty prediction is never correct
        (" the", ["the"], 0, 0),  # an article-only alias normalises to nothing
        (" Accra\nGhana", ["ghana"], 0, 0),  # only the first line is the answer
    ],
)
def test_scoring(generation, aliases, em, cont):
    doc = {"question": "q", "answers": aliases}
    assert freebase_qa.process_results(doc, [generation]) == {"exact_match": em, "contains": cont}


def test_alias_in_the_question_alone_does_not_count():
    # the reference code searched prompt + output, so a question that names its answer scored
    doc = {"question": "Which country's currency is the Ghana cedi?", "answers": ["ghana"]}
    assert freebase_qa.process_results(doc, [" I do not know."]) == {"exact_match": 0, "contains": 0}


def test_metric_helpers_agree_with_definitions():
    assert exact_match("Reds", ["reds", "Reds (film)"])
    assert not exact_match("Reds film", ["reds"])
    assert contains("it was Reds by Beatty", ["reds"])


@pytest.mark.parametrize(
    "reply, span",
    [
        ("The capital of Ghana is Accra.", "The capital of Ghana is Accra"),
        ("Sure! The answer is **Reds**.", "Reds"),
        ("Ghana", "Ghana"),
        ("It is Midway Games. It was released in 1980.", "Midway Games"),
        ('The answer to this question is "Pulp".', "Pulp"),
        ("Dr. Who is a show", "Dr. Who is a show"),
        ("J. K. Rowling wrote it. Later...", "J. K. Rowling wrote it"),
        ("Harold Abrahams\nHe won in Paris.", "Harold Abrahams"),
    ],
)
def test_chat_answer_span(reply, span):
    assert freebase_qa.extract_chat_answer(reply) == span


def test_chat_scoring_ignores_later_sentences():
    doc = {"question": "q", "answers": ["ghana"]}
    assert freebase_qa.process_results_chat(doc, ["Sure! Ghana."]) == {"exact_match": 1, "contains": 1}
    assert freebase_qa.process_results_chat(doc, ["It is Togo. Ghana is its neighbour."]) == {"exact_match": 0, "contains": 0}
    assert freebase_qa.doc_to_text_chat({"question": "Who?"}) == (
        "Answer this question with just the answer, in a few words.\nQuestion: Who?")
