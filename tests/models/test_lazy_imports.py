"""kick imports the optional quantization libraries only where a method uses them: registering kick, indexing its
tasks and checking a dense kick-hf configuration import none of them (torchao's import alone logs a warning)."""

from __future__ import annotations

import json
import subprocess
import sys

OPTIONAL = ("torchao", "bitsandbytes", "hqq", "optimum", "gptqmodel")

SCRIPT = f"""
import json, sys
import kick_models, kick_tasks
from kick_models.config import method_choices
from kick_models.lm import split_model_args
from kick_models.registration import register_model, task_manager

register_model()
task_manager(include_defaults=False)
method_choices()  # every built-in method registered, the load-time quantizers among them
split_model_args({{"method": "none", "dtype": "float32"}})
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set({OPTIONAL!r}))))
"""


def test_kick_start_up_and_a_dense_config_import_no_optional_library(subprocess_env):
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=subprocess_env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
