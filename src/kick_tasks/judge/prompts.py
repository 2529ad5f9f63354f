"""Judge prompt builders (our own wording) returning OpenAI-style chat messages.

Every builder returns ``list[dict(role, content)]``; the strict answer formats (``[[A]]`` /
``[[B]]`` / ``[[C]]`` and ``[[score]]``) are what `kick_tasks.judge.parsing` reads back.
Changing any wording here changes the cache keys, so old verdicts are not reused by mistake.
"""

from __future__ import annotations

Messages = list[dict[str, str]]

# Recorded in results next to the judge's name; bump it whenever any wording below changes.
PROMPT_VERSION = "kick-judge-2"  # 2: four summary criteria, review scores

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
    "story on four criteria, each on a scale from 1 (very poor) to 10 (excellent): coherence (it "
    "reads as one well-organised whole, not a heap of facts), consistency (every claim is "
    "supported by the story; nothing is invented), fluency (clean, grammatical sentences) and "
    "relevance (it keeps the story's important points and leaves out minor ones). The key "
    "points written by the story's editors are given for comparison. Give a short "
    "justification, then end with exactly four lines, one per criterion, in this form:\n"
    "Coherence: [[N]]\nConsistency: [[N]]\nFluency: [[N]]\nRelevance: [[N]]"
)

# Asked inside a pairwise review (instruction following): a 1-10 score for each answer, as in
# LLM-KICK's reviews, besides the verdict; the focus follows the question's category.
REVIEW_SCORES = (
    "Before the verdict, on its own line, give each answer an overall score from 1 to 10 "
    "(higher is better) as Scores: [[score of A, score of B]], for example Scores: [[8, 5]]."
)
REVIEW_FOCUS = {
    "coding": "This is a programming question: judge whether the code solves the stated problem "
              "correctly and efficiently, and how clear, well structured and commented it is.",
    "math": "This is a mathematics question: solve it yourself first, then check each answer's "
            "steps and result; a wrong result outweighs good presentation.",
}

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
    "criteria": (
        "Your reply did not end with the four ratings I could read. Reply again with only these "
        "four lines, each a whole number from 1 to 10 in double square brackets:\n"
        "Coherence: [[N]]\nConsistency: [[N]]\nFluency: [[N]]\nRelevance: [[N]]"
    ),
}
REFORMAT_REMINDER["review"] = REFORMAT_REMINDER["verdict"]


def _block(title: str, body: str) -> str:
    return f"<<{title}>>\n{body.strip()}\n<</{title}>>"


def pairwise_messages(question: str, answer_a: str, answer_b: str,
                      reference: str | None = None, scores: bool = False,
                      category: str | None = None) -> Messages:
    """Compare two answers to one question; ``reference`` (a known-good answer) is optional.

    With ``scores`` the judge also rates each answer 1-10 (``Scores: [[a, b]]``) before the
    verdict, with a category-specific focus for coding and math questions.
    """
    parts = [_block("Question", question)]
    if reference:
        parts.append(_block("Reference answer (for checking correctness)", reference))
    parts += [_block("Answer A", answer_a), _block("Answer B", answer_b)]
    if scores:
        if category in REVIEW_FOCUS:
            parts.append(REVIEW_FOCUS[category])
        parts.append(REVIEW_SCORES)
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
    """Rate a candidate news summary 1-10 on coherence, consistency, fluency and relevance."""
    parts = [_block("Article", article), _block("Editors' key points", key_points),
             _block("Candidate summary", summary),
             ("Rate the candidate summary. End with the four lines Coherence: [[N]], Consistency: "
              "[[N]], Fluency: [[N]] and Relevance: [[N]], each N from 1 to 10.")]
    return [{"role": "system", "content": SUMMARY_SYSTEM},
            {"role": "user", "content": "\n\n".join(parts)}]


def with_reminder(messages: Messages, bad_reply: str, kind: str) -> Messages:
    """The original conversation, the unreadable reply, and a request to restate the verdict."""
    if kind not in REFORMAT_REMINDER:
        raise ValueError(f"unknown reply kind {kind!r}; accepted: {sorted(REFORMAT_REMINDER)}")
    return [*messages, {"role": "assistant", "content": bad_reply or ""},
            {"role": "user", "content": REFORMAT_REMINDER[kind]}]
