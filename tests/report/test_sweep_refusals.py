"""kick-sweep refuses the second audit's bad settings before any cell runs: one message naming the setting, its
value and what is accepted; no cell started and no results folder written."""

from __future__ import annotations

import json
import re

import pytest
import torch

from kick_study import sweep


class NoCell:
    """A runner that fails the test if a cell is ever started."""

    def __call__(self, cell, cell_dir):
        raise AssertionError(f"cell {cell.cell_id} started: a check came too late")


def _yaml(tmp_path, text):
    path = tmp_path / f"sweep-{abs(hash(text))}.yaml"
    path.write_text(text, encoding="utf-8")
    return ["--config", str(path)]


@pytest.mark.parametrize("case", ["include_path", "model_folder", "cache_dir", "batch_size", "null_model", "cuda7",
                                  "gptq_no_bits", "labels", "index_list"])
def test_bad_sweep_settings_stop_before_any_cell(tmp_path, capsys, tiny_model_dir, case):
    out = tmp_path / "out"
    base = ["--models", str(tiny_model_dir), "--methods", "magnitude", "--sparsities", "0.5",
            "--tasks", "kick_ppl_heldout", "--wikitext", "false", "--out", str(out)]
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    argv, message = {
        "include_path": ([*base, "--include_path", str(tmp_path / "missing")],
                         r"include_path='.*missing': no such folder .*accepted: an existing folder of task YAMLs"),
        "model_folder": ([*base, "--models", str(tmp_path / "no-model")],
                         r"invalid models item '.*no-model': kick-hf: invalid model_arg pretrained=.*no such folder"),
        "cache_dir": ([*base, "--cache_dir", str(a_file)], r"cache_dir='.*a-file': a file, not a folder; accepted: a folder"),
        "batch_size": ([*_yaml(tmp_path, "batch_size: abc\n"), *base],
                       r"batch_size='abc'; accepted: a positive integer, auto or auto:N"),
        "null_model": ([*_yaml(tmp_path, "models: [null]\n"), *base[2:]],
                       r"invalid models item None; accepted: Hub ids, local model folders, embedded"),
        "cuda7": ([*base, "--device", "cuda:7"], r"device='cuda:7': this machine has \d+ CUDA GPU|device='cuda:7': this "
                                                 r"machine has no CUDA GPU; accepted: cpu"),
        "gptq_no_bits": ([*base, "--methods", "gptq"],
                         r"methods item 'gptq' has no cell in this grid: it needs bits below 16 .*accepted: e.g. bits: \[4\]"),
        "labels": ([*base, "--sparsities", "0.3,0.30001"],
                   r"sparsities '0.3' and '0.30001' share the label s0.30.*accepted: sparsities that differ at the second"),
        "index_list": ([*base], r"index.json holds a JSON list, not kick-sweep's index.*accepted: an index written by"),
    }[case]
    if case == "cuda7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a GPU 7")
    if case == "index_list":
        out.mkdir()
        (out / "index.json").write_text(json.dumps([1, 2]))
    assert sweep.main(argv, runner=NoCell()) == 2
    err = capsys.readouterr().err
    assert err.startswith("kick-sweep: ") and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    if case != "index_list":
        assert not out.exists()  # nothing written


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from kick_testlib.tiny_models import save_tiny_llama

    folder = tmp_path_factory.mktemp("tiny") / "model"
    save_tiny_llama(folder)
    return folder


def test_an_unreachable_judge_stops_a_sweep_with_judged_tasks(monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("KICK_JUDGE_MODEL", "judge")
    monkeypatch.setenv("KICK_JUDGE_BASE_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("KICK_JUDGE_MAX_RETRIES", "0")
    sweep.check_judge(["kick_freebaseqa"])  # no judged task: nothing asked
    with pytest.raises(sweep.SweepError, match=r"the judge for the judged tasks cannot be used: .*not reachable"):
        sweep.check_judge(["kick_instruct"])
