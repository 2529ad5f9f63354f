"""The start-up hook acts only in lm_eval processes; kick-hf and the kick tasks reach stock lm_eval."""

import json
import subprocess
import sys

import pytest

from _kick_lm_eval_hook import is_lm_eval_process


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["python", "-m", "lm_eval", "--tasks", "x"], True),
        (["python", "-u", "-m", "lm_eval.__main__"], True),
        (["python", "-mlm_eval"], True),
        (["/usr/bin/python3", "/venv/bin/lm_eval", "--model", "hf"], True),
        (["python", "-X", "importtime", "/venv/bin/lm-eval"], True),
        (["python", "-c", "import lm_eval"], False),
        (["python", "-m", "pytest"], False),
        (["python", "/venv/bin/accelerate", "launch", "-m", "lm_eval"], False),  # its child runs -m lm_eval
        (["python", "train_lm_eval_model.py"], False),
        (["python"], False),
    ],
)
def test_lm_eval_process_detection(argv, expected):
    assert is_lm_eval_process(argv) is expected


def _python(code, env):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return out.stdout.strip()


def test_other_python_processes_are_untouched(subprocess_env):
    probe = ("import sys, json; print(json.dumps([m for m in ('lm_eval', 'torch', 'kick_models') if m in sys.modules]"
             " + [type(f).__name__ for f in sys.meta_path if 'After' in type(f).__name__]))")
    assert json.loads(_python(probe, subprocess_env)) == []


def test_python_api_registers_model_and_keeps_builtins(subprocess_env):
    code = (
        "import kick_models; from lm_eval.api.registry import get_model; "
        "print(get_model('kick-hf').__name__, get_model('hf').__name__, 'torch' in __import__('sys').modules)"
    )
    # importing kick_models registers a lazy placeholder: torch loads only when kick-hf is resolved
    assert _python(code, subprocess_env) == "KickHFLM HFLM True"
    lazy = "import sys, kick_models; print('torch' in sys.modules, 'kick_models.lm' in sys.modules)"
    assert _python(lazy, subprocess_env) == "False False"


@pytest.mark.slow  # indexes every lm-eval task (15-30 s)
def test_task_manager_helper_includes_kick_tasks():
    from kick_models import task_manager

    tm = task_manager()
    assert "kick_freebase" in tm.all_tasks
    assert "mmlu" in tm.all_tasks  # built-in tasks are still there


def test_entry_point_matches_registered_target():
    from importlib.metadata import entry_points

    from kick_models.registration import MODEL_TARGET

    (ep,) = [e for e in entry_points(group="lm_eval.models") if e.name == "kick-hf"]
    assert ep.value == MODEL_TARGET


@pytest.mark.slow
def test_kick_eval_fallback_runs_lm_eval_cli(subprocess_env):
    out = subprocess.run(["kick-eval", "ls", "tasks"], capture_output=True, text=True, env=subprocess_env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "kick_freebase" in out.stdout
