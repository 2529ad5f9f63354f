"""Console script ``kick-eval``: lm-eval's own CLI with kick registered (``kick-compress`` lives in ``export``)."""

from __future__ import annotations

import sys


def kick_eval(argv: list[str] | None = None) -> None:
    """Run lm-eval's own command line with ``kick-hf`` and the kick tasks registered.

    The fallback for environments where the start-up hook does not run (e.g. ``.pth`` files are
    skipped); takes exactly ``lm_eval``'s arguments.
    """
    from kick_models.registration import patch_task_manager, register_model

    register_model(cli=True)
    patch_task_manager()
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()

