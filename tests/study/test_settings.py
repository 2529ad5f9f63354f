"""kick-sweep's settings: one frozen, typed object built from the config vocabulary, checked once, recorded whole."""

from __future__ import annotations

import dataclasses
import json

import pytest

from kick_study.settings import MethodEntry, SweepError, SweepSettings


def test_values_are_typed_once_and_the_record_rebuilds_the_same_settings(tmp_path):
    raw = {"models": "org/a, org/b", "methods": ["Wanda", {"awq": {"wbits": 4}}], "sparsities": "0.3,0.5",
           "patterns": "unstructured, 2:4", "bits": ["4", 16.0], "tasks": "t1,t2", "limit": 52.0, "seeds": "0,1",
           "wikitext": "false", "prune_and_quantize": "true", "model_args": "nsamples=8", "out": str(tmp_path)}
    s = SweepSettings.from_mapping(raw, complete=True)
    assert s.models == ("org/a", "org/b") and s.methods == ("wanda", MethodEntry("awq", {"wbits": 4}))
    assert s.method_names == ("wanda",)
    assert s.sparsities == (0.3, 0.5) and s.patterns == (None, (2, 4)) and s.bits == (4, 16)
    assert s.limit == 52 and isinstance(s.limit, int) and s.seeds == (0, 1)
    assert s.wikitext is False and s.prune_and_quantize is True and s.noise_floor is False
    assert s.model_args == {"nsamples": "8"} and (s.launcher, s.cpus_per_cell) == ("serial", None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.limit = 3
    assert SweepSettings.from_mapping(json.loads(json.dumps(s.record()))) == s


@pytest.mark.parametrize("raw, message", [
    ({"prune_and_quantize": "maybe"}, "kick-sweep: invalid prune_and_quantize='maybe'; accepted: true | false"),
    ({"modles": ["x"]}, "kick-sweep: unknown setting(s) ['modles']"),
    ({"wikitext": "sometimes"}, "kick-sweep: wikitext='sometimes'; accepted: auto | true | false"),
    ({"runner": "thread"}, "kick-sweep: runner='thread'; accepted: subprocess | inprocess"),
    ({"tasks": []}, "kick-sweep: no tasks given"),
])
def test_a_bad_setting_is_one_refusal_at_construction(tmp_path, raw, message):
    with pytest.raises(SweepError) as err:
        SweepSettings.from_mapping({"models": ["org/a"], "tasks": ["t"], "out": str(tmp_path), **raw}, complete=True)
    assert str(err.value).startswith(message)
