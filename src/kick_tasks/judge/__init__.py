"""LLM-as-a-judge for the generative LLM-KICK tasks: prompts, reply parsers, cache and transport.

The pieces are split so each can be tested alone: `prompts` builds chat messages, `parsing`
turns a reply into a verdict or score (or ``None`` with a reason), `cache` stores verdicts on
disk, `client` talks to any OpenAI-compatible chat-completions endpoint, and `grading` runs
whole batches (pairwise in both orders, or single-answer 1-10) through them.
"""
