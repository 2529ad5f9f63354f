"""kick-hf's own model_args (cache, fidelity, bookkeeping) are Params like a method's: read by one code path,
refused in one shape, and listed on the generated model-args page from their declarations."""

from __future__ import annotations

from pathlib import Path

import pytest

from kick_models.config import ConfigError
from kick_models.lm import split_model_args
from kick_models.options import KICK_KEYS, KICK_OPTIONS, read_options

PAGE = Path(__file__).resolve().parents[2] / "docs" / "model_args.md"
PARAMS = {p.name: p for p in KICK_OPTIONS}


@pytest.mark.parametrize("key, given, read", [
    ("no_cache", "TRUE", True), ("keep_grids", False, False), ("fidelity", " false ", False),
    ("cache_lock_timeout", "-1", -1.0), ("cache_lock_timeout", 30, 30.0),
    ("floor", " Dense ", "dense"), ("continuous_batching", True, "true"), ("continuous_batching", "AUTO", "auto"),
    ("parent", " Org/Dense ", "Org/Dense"), ("cache_dir", "~/My Cache", "~/My Cache"),  # names keep their case
])
def test_each_option_is_read_as_its_type(key, given, read):
    assert read_options({key: given}) == {key: read}


@pytest.mark.parametrize("key, bad", [
    ("no_cache", "maybe"), ("keep_grids", 1), ("fidelity", ""), ("cache_lock_timeout", "-0.5"),
    ("cache_lock_timeout", "soon"), ("floor", "twice"), ("floor", True), ("continuous_batching", "sometimes"),
])
def test_a_bad_value_is_refused_in_the_one_shape(key, bad):
    expected = f"kick-hf: invalid model_arg {key}={bad!r}; accepted: {PARAMS[key].accepted()}"
    with pytest.raises(ConfigError) as err:
        split_model_args({"method": "none", key: bad})
    assert str(err.value) == expected


def test_floor_against_the_method_stays_a_rule_of_its_own():
    assert split_model_args({"method": "none", "floor": "dense"})[1]["floor"] == "dense"
    with pytest.raises(ConfigError, match=r"floor='dense'; accepted: dense \(with method=none\) \| recompressed"):
        split_model_args({"method": "wanda", "sparsity": 0.5, "floor": "dense"})


def test_every_option_is_declared_and_on_the_generated_page():
    page = PAGE.read_text(encoding="utf-8")
    assert KICK_KEYS == tuple(PARAMS)
    for p in KICK_OPTIONS:
        assert p.help, p.name
        row = next((line for line in page.splitlines() if line.startswith(f"| `{p.name}` |")), None)
        assert row is not None and p.accepted().replace("|", "\\|") in row and p.help in row, p.name


@pytest.mark.parametrize("value", ["4", " -2 ", 4, 4.0, 4.5, "4.5", "1e3", "nan", "inf", True, "true", "TRUE", "yes", "",
                                   None, "x", 1, 0])
def test_params_read_values_as_kick_common_does(value):
    """The plug-in contract reads booleans and numbers itself (it imports nothing of kick), exactly as kick_common."""
    from kick_common.args import ArgsError, as_bool, as_number
    from kick_models.compression.method import Param

    def param(kind):
        try:
            return Param("x", kind, None).convert(value)
        except ValueError:
            return "refused"

    def common_bool():
        try:
            return as_bool(value)
        except ArgsError:
            return "refused"

    assert param(bool) == common_bool()
    for kind in (int, float):
        number = as_number(value, kind)
        assert param(kind) == ("refused" if number is None else number), kind
