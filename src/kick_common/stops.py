"""The stop rule kick's first-line tasks declare in ``until``, shared by the task files and kick-hf.

The metric of ``kick_icrqa*`` and ``kick_freebase*`` reads only the first non-empty line of the
stripped continuation, so generating past it is wasted. A plain ``until: ["\\n"]`` would cut a
reply that opens with a line break to nothing, so the tasks name this marker instead: kick-hf stops
a sequence once its first non-empty line is complete (same first line, fewer tokens); any other
model never meets the marker in its text and generates to ``max_gen_toks`` as before.
"""

FIRST_LINE = "<kick:first-line>"


def first_line_done(text: str) -> bool:
    """True once ``text`` holds a complete first non-empty line (leading whitespace skipped)."""
    return "\n" in text.lstrip()
