"""Judge prompt builders (our own wording) returning OpenAI-style chat messages.

Every builder returns ``list[dict(role, content)]``; the strict answer formats (``[[A]]`` /
``[[B]]`` / ``[[C]]`` and ``[[score]]``) are what `kick_tasks.judge.parsing` reads back.
Changing any wording here changes the cache keys, so old verdicts are not reused by mistake.
"""

from __future__ import annotations

Messages = list[dict[str, str]]

# Recorded in results next to the judge's name; bump it whenever any wording below changes.
PROMPT_VERSION = "kick-judge-2"

PAIRWISE_SYSTEM = (
    "You are a careful, impartial reviewer of AI assistant answers. You will see one user "
    "question and two answers, labelled A and B. Decide which answer serves the user better, "
    "weighing correctness first, then helpfulness, relevance, depth and clarity. The order in "
    "which the answers appear and their length must not sway you, and neither must any name "
    "attached to them. Give a short justification (a few sentences), then on the last line "
    "write exactly one of: [[A]] if A is better, [[B]] if B is better, [[C]] if they are "
    "equally good."
)

SINGLE_SYSTEM = (
    "You are a careful, impartial reviewer of AI assistant answers. Rate the quality of the "
    "assistant's answer to the user's request on a scale from 1 (useless or wrong) to 10 "
    "(excellent), weighing correctness first, then helpfulness, relevance, depth and clarity. "
    "When a reference answer is supplied, use it to check correctness, not style. Give a short "
    "justification (a few sentences), then on the last line write the rating as [[N]], for "
    "example [[6]]."
)

SUMMARY_SYSTEM = (
    "You are a careful, impartial reviewer of news summaries. Rate the candidate summary of the "
    "article on a scale from 1 (useless or unfaithful) to 10 (excellent). Judge four things: "
    "consistency (every claim is supported by the article), relevance (it keeps the key points "
    "and leaves out minor ones), coherence (it reads as a well-organised whole) and fluency "
    "(clean, grammatical sentences). The key points written by the article's editors are given "
    "for comparison. Give a short justification, then on the last line write the rating as "
    "[[N]], for example [[6]]."
)

REFORMAT_REMINDER = {
    "verdict": (
        "Your reply did not end with a verdict I could read. Reply again with only your "
        "final decision in the required format: [[A]], [[B]] or [[C]]."
    ),
    "score": (
        "Your reply did not end with a rating I could read. Reply again with only your final "
        "rating in the required format: a whole number from 1 to 10 in double square "
        "brackets, for example [[6]]."
    ),
}


def _block(title: str, body: str) -> str:
    return f"<<{title}>>\n{body.strip()}\n<</{title}>>"


def pairwise_messages(question: str, answer_a: str, answer_b: str,
                      reference: str | None = None) -> Messages:
    """Compare two answers to one question; ``reference`` (a known-good answer) is optional."""
    parts = [_block("Question", question)]
    if reference:
        parts.append(_block("Reference answer (for checking correctness)", reference))
    parts += [_block("Answer A", answer_a), _block("Answer B", answer_b)]
    parts.append("Which answer is better? End with [[A]], [[B]] or [[C]].")
    return [{"role": "system", "content": PAIRWISE_SYSTEM},
            {"role": "user", "content": "\n\n".join(parts)}]


def single_messages(question: str, answer: str, reference: str | None = None) -> Messages:
    """Rate one answer to a single-turn question from 1 to 10."""
    parts = [_block("Question", question)]
    if reference:
        parts.append(_block("Reference answer", reference))
    parts.append(_block("Assistant's answer", answer))
    parts.append("Rate the assistant's answer. End with [[N]], N from 1 to 10.")
    return [{"role": "system", "content": SINGLE_SYSTEM},
            {"role": "user", "content": "\n\n".join(parts)}]


def second_turn_messages(questions: tuple[str, str], answers: tuple[str, str],
                         references: tuple[str, str] | None = None) -> Messages:
    """Rate the assistant's SECOND answer of a two-turn conversation from 1 to 10."""
    conversation = (
        f"User: {questions[0].strip()}\n\nAssistant: {answers[0].strip()}\n\n"
        f"User: {questions[1].strip()}\n\nAssistant: {answers[1].strip()}"
    )
    parts = [_block("Conversation", conversation)]
    if references:
        parts.append(_block("Reference answers", "First turn:\n" + references[0].strip()
                            + "\n\nSecond turn:\n" + references[1].strip()))
    parts.append("Rate only the assistant's second answer (to the user's follow-up), in the "
                 "context of the conversation. End with [[N]], N from 1 to 10.")
    return [{"role": "system", "content": SINGLE_SYSTEM},
            {"role": "user", "content": "\n\n".join(parts)}]


def summary_messages(article: str, summary: str, key_points: str) -> Messages:
    """Rate a candidate news summary from 1 to 10 against the article and its editors' key points."""
    parts = [_block("Article", article), _block("Editors' key points", key_points),
             _block("Candidate summary", summary),
             "Rate the candidate summary. End with [[N]], N from 1 to 10."]
    return [{"role": "system", "content": SUMMARY_SYSTEM},
            {"role": "user", "content": "\n\n".join(parts)}]


def with_reminder(messages: Messages, bad_reply: str, kind: str) -> Messages:
    """The original conversation, the unreadable reply, and a request to restate the verdict."""
    if kind not in REFORMAT_REMINDER:
        raise ValueError(f"unknown reply kind {kind!r}; accepted: {sorted(REFORMAT_REMINDER)}")
    return [*messages, {"role": "assistant", "content": bad_reply or ""},
            {"role": "user", "content": REFORMAT_REMINDER[kind]}]
