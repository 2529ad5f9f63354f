"""kick_icrqa: closed/open book prompts, evidence budget, the mini fixture, the hub loader's error,
and TriviaQA scoring next to the reference's containment bug."""

import pytest
from lm_eval.tasks import TaskManager

import kick_tasks
from kick_tasks import icrqa
from kick_tasks.normalize import normalize_answer
from kick_testlib.reference import reference_contains


@pytest.fixture(scope="module")
def task_manager():
    return TaskManager(include_path=str(kick_tasks.task_yamls_dir()), include_defaults=False)


@pytest.fixture(scope="module")
def mini():
    return icrqa.load_mini()["validation"]


def _task(task_manager, name):
    return task_manager.load([name])["tasks"][name]


def test_mini_fixture_answers_appear_in_their_evidence(mini):
    assert len(mini) >= 40
    assert len(set(mini["question"])) == len(mini)
    for doc in mini:
        evidence = f" {normalize_answer(icrqa.evidence_text(doc))} "
        aliases = icrqa._answers(doc)
        assert any(f" {a} " in evidence for a in aliases), (doc["question_id"], aliases)
        # the question itself must not give the answer away
        assert not any(f" {a} " in f" {normalize_answer(doc['question'])} " for a in aliases), doc["question_id"]


def test_prompt_snapshots(task_manager, mini):
    doc = mini[0]
    closed = _task(task_manager, "kick_icrqa_mini_closed")
    assert closed.fewshot_context(doc, 0) == (
        "Answer these questions:\n\n"
        "Q: Christian Tarr was a member of the U.S. House of Representatives from which state?\nA:"
    )
    open_book = _task(task_manager, "kick_icrqa_mini_open")
    prompt = open_book.fewshot_context(doc, 0)
    assert prompt.startswith(
        "Christian Tarr (May 25, 1765 \u2013 February 24, 1833) was a member of the U.S. House of "
        "Representatives from Pennsylvania.\nChristian Tarr was born in Baltimore, Maryland."
    )
    assert prompt.endswith(
        "Brownsville, Pennsylvania.\n\nBased on these texts, answer these questions:\n\n"
        "Q: Christian Tarr was a member of the U.S. House of Representatives from which state?\nA:"
    )
    assert closed.config.generation_kwargs["max_gen_toks"] == 32


def test_evidence_order_wikipedia_then_web():
    doc = {"entity_pages": {"wiki_context": ["W1", "W2"]}, "search_results": {"search_context": [" S1 ", "S2"]}}
    assert icrqa.evidence_text(doc) == "W1\n\nS1"
    assert icrqa.evidence_text({"entity_pages": {"wiki_context": []}, "search_results": {}}) == ""


def test_open_book_evidence_fits_a_token_budget(task_manager, mini, smol_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smol_path)
    task = _task(task_manager, "kick_icrqa_mini_open")
    doc = mini[0]
    meta = dict(task.config.metadata)
    # explicit evidence budget in tokens
    task.config.metadata = {**meta, "pretrained": str(smol_path), "icrqa_evidence_tokens": 20}
    prompt = task.fewshot_context(doc, 0)
    evidence = prompt.split("\n\nBased on these texts")[0]
    assert len(tokenizer(evidence, add_special_tokens=False)["input_ids"]) <= 20
    assert icrqa.evidence_text(doc).startswith(evidence)
    # default budget: the model's context minus the question and the 32 new tokens
    task.config.metadata = {**meta, "pretrained": str(smol_path), "max_length": 128}
    prompt = task.fewshot_context(doc, 0)
    assert len(tokenizer(prompt)["input_ids"]) + 32 <= 128
    assert prompt.endswith("from which state?\nA:")
    # the paper's cut: 3,072 characters (here: a 100-character cut, no tokenizer needed)
    task.config.metadata = {**meta, "icrqa_evidence_chars": 100}
    assert task.fewshot_context(doc, 0).split("\n\nBased on")[0] == icrqa.evidence_text(doc)[:100]
    task.config.metadata = meta


def test_source_switch(monkeypatch):
    monkeypatch.delenv(icrqa.SOURCE_ENV, raising=False)
    assert icrqa.resolve_source() == "hub"
    monkeypatch.setenv(icrqa.SOURCE_ENV, "mini")
    assert icrqa.resolve_source() == "mini"
    assert len(icrqa.load_icrqa()["validation"]) == len(icrqa.load_mini()["validation"])
    assert icrqa.resolve_source("hub") == "hub"  # metadata wins over the environment
    with pytest.raises(ValueError, match="'web'"):
        icrqa.resolve_source("web")


def test_hub_unreachable_error_is_clear(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="mandarjoshi/trivia_qa") as info:
        icrqa.load_icrqa(icrqa_source="hub")
    assert "KICK_ICRQA_SOURCE=mini" in str(info.value)


@pytest.mark.parametrize(
    "generation, aliases, em, contains",
    [
        (" Paris", ["Paris"], 1, 1),
        (" The Paris.", ["paris"], 1, 1),
        (" Ludwig van Beethoven\nQ: next", ["Beethoven", "Ludwig van Beethoven"], 1, 1),
        ("\n\n Paris\nmore", ["Paris"], 1, 1),  # strip first, then the first line (as the reference)
        (" It is Paris, France", ["Paris"], 0, 1),
        (" New York", ["New York City"], 0, 1),  # containment runs both ways, as in the paper
        ("", ["Paris"], 0, 0),  # empty: the reference counted it as correct
        (" The", ["Paris"], 0, 0),  # article-only, likewise
        ("\nA:\nA:", ["Paris"], 0, 0),  # "A:" normalises to the article "a" -> nothing
        (" London", ["Paris"], 0, 0),
    ],
)
def test_scoring(generation, aliases, em, contains):
    doc = {"question": "Which city is the capital of France?", "answer": {"value": aliases[0], "aliases": aliases}}
    scores = icrqa.process_results(doc, [generation])
    assert scores["exact_match"] == em
    assert scores["contains_paper"] == contains
    assert 0.0 <= scores["f1"] <= 1.0
    if em:
        assert scores["f1"] == 1.0


def test_reference_bugs_are_fixed():
    aliases = ["Paris"]
    # the reference's "exact match" was two-way containment: "" is inside every alias
    assert reference_contains("", aliases) == 1.0
    assert reference_contains("\nA:".strip(), aliases) == 1.0
    assert icrqa.contains_paper("", aliases) == 0.0
    assert icrqa.exact_match("", aliases) == 0.0
    # an alias that appears only in the question does not count: only the continuation is scored
    doc = {"question": "Is Paris the capital of France?", "answer": {"value": "Paris", "aliases": aliases}}
    assert icrqa.process_results(doc, [" Yes"]) == {"exact_match": 0.0, "f1": 0.0, "contains_paper": 0.0}


def test_f1_is_token_overlap_maximised_over_aliases():
    assert icrqa.token_f1("the comet appeared in November 2002", ["2002", "November 2002"]) == pytest.approx(
        2 * (2 / 5) * 1 / (2 / 5 + 1)
    )
    assert icrqa.token_f1("", ["x"]) == 0.0


def _hub_shaped_rows():
    """Three rows in the exact schema of mandarjoshi/trivia_qa ``rc`` (nested sequences included)."""
    import datasets

    text, strings = datasets.Value("string"), datasets.Sequence(datasets.Value("string"))
    features = datasets.Features({
        "question": text, "question_id": text, "question_source": text,
        "entity_pages": datasets.Sequence({"doc_source": text, "filename": text, "title": text, "wiki_context": text}),
        "search_results": datasets.Sequence({"description": text, "filename": text, "rank": datasets.Value("int32"),
                                             "title": text, "url": text, "search_context": text}),
        "answer": {"aliases": strings, "normalized_aliases": strings, "matched_wiki_entity_name": text,
                   "normalized_matched_wiki_entity_name": text, "normalized_value": text, "type": text, "value": text},
    })

    def row(i, question, wiki, web, value, aliases):
        return {
            "question": question, "question_id": f"tc_{i}", "question_source": "http://www.example.org/",
            # a sequence of records is stored column-wise: a dict of equal-length lists, as the Hub serves it
            "entity_pages": {"doc_source": ["TagMe"], "filename": [f"W{i}.txt"], "title": [f"W{i}"],
                             "wiki_context": [wiki]},
            "search_results": {"description": ["d"] * bool(web), "filename": [f"S{i}.txt"] * bool(web),
                               "rank": [0] * bool(web), "title": [f"S{i}"] * bool(web),
                               "url": ["http://example.org"] * bool(web), "search_context": [web] * bool(web)},
            "answer": {"aliases": aliases, "normalized_aliases": [a.lower() for a in aliases],
                       "matched_wiki_entity_name": "", "normalized_matched_wiki_entity_name": "",
                       "normalized_value": value.lower(), "type": "WikipediaEntity", "value": value},
        }

    rows = [row(0, "Which river flows through Vienna?", "Vienna lies on the Danube.", "The Danube is a river.",
                "Danube", ["Danube", "River Danube"]),
            row(1, "Who wrote Hamlet?", "Hamlet is a tragedy by William Shakespeare.", "",
                "William Shakespeare", ["Shakespeare", "William Shakespeare"]),
            row(2, "What is the chemical symbol of gold?", "Gold has the symbol Au.", "Au is gold.", "Au", ["Au"])]
    return datasets.Dataset.from_list(rows, features=features)


def test_hub_source_reads_the_rc_schema_in_dataset_order(monkeypatch):
    """The default (hub) source, with the Hub call answered by rows in TriviaQA rc's own schema."""
    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return _hub_shaped_rows()

    monkeypatch.delenv(icrqa.SOURCE_ENV, raising=False)
    monkeypatch.setattr(icrqa.datasets, "load_dataset", fake_load_dataset)
    manager = TaskManager(include_path=str(kick_tasks.task_yamls_dir()), include_defaults=False)
    tasks = manager.load(["kick_icrqa_open", "kick_icrqa_closed"])["tasks"]
    assert calls and set(calls) == {("mandarjoshi/trivia_qa", "rc", "validation")}
    open_book, closed = tasks["kick_icrqa_open"], tasks["kick_icrqa_closed"]
    docs = list(open_book.test_docs())
    assert [d["question_id"] for d in docs] == ["tc_0", "tc_1", "tc_2"]  # the dataset's order: --limit is stable
    prompt = open_book.fewshot_context(docs[0], 0)
    assert prompt.startswith("Vienna lies on the Danube.\n\nThe Danube is a river.\n\n")
    assert prompt.endswith("Q: Which river flows through Vienna?\nA:")
    assert open_book.fewshot_context(docs[1], 0).startswith("Hamlet is a tragedy by William Shakespeare.\n\nBased")
    assert closed.fewshot_context(docs[2], 0).endswith("Q: What is the chemical symbol of gold?\nA:")
    assert "Au is gold" not in closed.fewshot_context(docs[2], 0)
    assert open_book.doc_to_target(docs[0]) == "Danube"
    assert icrqa.process_results(docs[1], [" Shakespeare\n"])["exact_match"] == 1.0
    assert icrqa.process_results(docs[0], [" the River Danube."])["exact_match"] == 1.0


def test_evidence_budget_follows_the_effective_max_gen_toks(task_manager, mini, tiny_llama_dir):
    """The room left for new tokens is the task's max_gen_toks as lm-eval resolves it: the YAML's 32,
    or a --gen_kwargs override (simple_evaluate merges it into generation_kwargs before prompts)."""
    from lm_eval.utils import simple_parse_args_string
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    task = _task(task_manager, "kick_icrqa_mini_open")
    doc = mini[0]
    task.config.metadata = {**task.config.metadata, "tokenizer": str(tiny_llama_dir), "max_length": 400}
    assert task.config.generation_kwargs["max_gen_toks"] == 32
    default = len(tokenizer(task.fewshot_context(doc, 0))["input_ids"])
    assert 400 - 32 - 8 <= default <= 400 - 32  # the evidence fills the room, new tokens fit
    task.set_config(key="generation_kwargs", value=simple_parse_args_string("max_gen_toks=200"), update=True)
    overridden = len(tokenizer(task.fewshot_context(doc, 0))["input_ids"])
    assert 400 - 200 - 8 <= overridden <= 400 - 200
    assert task.fewshot_context(doc, 0).endswith(f"Q: {doc['question']}\nA:")
