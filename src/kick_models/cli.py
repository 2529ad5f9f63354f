"""Console scripts: ``kick-eval`` (lm-eval's CLI with kick registered) and ``kick-compress``."""

from __future__ import annotations

import sys


def kick_eval(argv: list[str] | None = None) -> None:
    """Run lm-eval's own command line with ``kick-hf`` and the kick tasks registered.

    The fallback for environments where the start-up hook does not run (e.g. ``.pth`` files are
    skipped); takes exactly ``lm_eval``'s arguments.
    """
    from kick_models.registration import patch_task_manager, register_model

    register_model()
    patch_task_manager()
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


def kick_compress(argv: list[str] | None = None) -> None:
    """Compress once and export a plain Hugging Face checkpoint (see ``kick_models.export``)."""
    from kick_models.export import main

    main(argv)
