"""Start-up hook (run from ``kick_lm_eval_hook.pth``): in ``lm_eval`` processes only, register kick.

It imports nothing but ``sys``/``importlib`` at start-up. In an lm_eval process it waits for lm-eval's
own modules to load, then registers ``kick-hf`` and adds the kick task folder; every other Python
process is left exactly as it was.
"""

import importlib.abc
import sys

_LM_EVAL_SCRIPTS = ("lm_eval", "lm-eval")
_OPTIONS_WITH_VALUE = ("-W", "-X", "-Q")


def is_lm_eval_process(argv):
    """True for ``lm_eval ...``, ``python -m lm_eval ...`` (also as launched by accelerate/torchrun)."""
    args = list(argv[1:])
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-m":
            return i + 1 < len(args) and args[i + 1].split(".")[0] == "lm_eval"
        if arg.startswith("-m"):
            return arg[2:].split(".")[0] == "lm_eval"
        if arg == "-c" or arg == "-":
            return False
        if arg in _OPTIONS_WITH_VALUE:
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        name = arg.replace("\\", "/").rsplit("/", 1)[-1]
        return name in _LM_EVAL_SCRIPTS
    return False


def _on_lm_eval_models(module):
    from kick_models.registration import register_model

    register_model(cli=True)


def _on_lm_eval_task_manager(module):
    from kick_models.registration import patch_task_manager

    patch_task_manager()


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs a callback right after a named module has executed (a post-import hook)."""

    def __init__(self, callbacks):
        self.callbacks = dict(callbacks)

    def find_spec(self, name, path=None, target=None):
        callback = self.callbacks.get(name)
        if callback is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        del self.callbacks[name]
        original = spec.loader.exec_module

        def exec_module(module):
            original(module)
            callback(module)

        spec.loader.exec_module = exec_module
        return spec


def install(argv=None):
    if argv is None:
        argv = getattr(sys, "orig_argv", sys.argv)
    if not is_lm_eval_process(argv):
        return False
    sys.meta_path.insert(
        0,
        _AfterImport({"lm_eval.models": _on_lm_eval_models, "lm_eval.tasks.manager": _on_lm_eval_task_manager}),
    )
    return True


install()
