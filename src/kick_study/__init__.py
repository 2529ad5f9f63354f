"""LLM-KICK curves for your own model: run a compression grid (``kick-sweep``) and report it (``kick-report``)."""
