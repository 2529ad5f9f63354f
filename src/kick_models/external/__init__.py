"""Models compressed by other libraries: load-time quantizers run through their own APIs, and
pre-compressed checkpoints judged against a dense parent, with where each came from recorded."""
