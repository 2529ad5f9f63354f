"""Every bad model_arg gets one clear error naming key, value and what is accepted — before weights load."""

import pytest

from kick_models.config import ConfigError, build_config, parse_pattern
from kick_models.lm import KickHFLM, split_model_args


@pytest.mark.parametrize(
    "args, key, accepted",
    [
        ({"method": "prune"}, "method='prune'", "magnitude"),
        ({"method": "wanda", "sparsity": 1.0}, "sparsity=1.0", "[0, 1)"),
        ({"method": "wanda", "sparsity": -0.1}, "sparsity=-0.1", "[0, 1)"),
        ({"method": "wanda", "sparsity": "lots"}, "sparsity='lots'", "[0, 1)"),
        ({"method": "wanda", "sparsity": 0.3, "pattern": "2:4"}, "sparsity=0.3", "0.5 with pattern=2:4"),
        ({"method": "wanda", "pattern": "2-4"}, "pattern='2-4'", "N:M"),
        ({"method": "wanda", "pattern": "5:4"}, "pattern='5:4'", "0 < N < M"),
        ({"method": "wanda", "pattern": "0:4"}, "pattern='0:4'", "0 < N < M"),
        ({"method": "gptq", "wbits": 5}, "wbits=5", "2, 3, 4, 8, 16"),
        ({"method": "gptq", "wbits": True}, "wbits=True", "2, 3, 4, 8, 16"),
        ({"method": "gptq", "group_size": 0}, "group_size=0", "-1"),
        ({"method": "gptq", "group_size": -2}, "group_size=-2", "-1"),
        ({"method": "gptq", "act_order": 1}, "act_order=1", "true or false"),
        ({"method": "gptq", "true_sequential": "maybe"}, "true_sequential='maybe'", "true or false"),
        ({"method": "wanda", "sparsity": 0.5, "skip_experts": "dense"}, "skip_experts='dense'", "true or false"),
        ({"method": "wanda", "sparsity": 0.5, "nsamples": 0}, "nsamples=0", "positive"),
        ({"method": "wanda", "sparsity": 0.5, "seqlen": -5}, "seqlen=-5", "positive"),
        ({"method": "none", "sparsity": 0.5}, "method='none'", "magnitude"),
        ({"method": "gptq", "sparsity": 0.5}, "method='gptq'", "wbits"),
        ({"method": "wanda", "pattern": "2:4", "sparsity_profile": "owl"}, "sparsity_profile='owl'", "uniform"),
        ({"method": "wanda", "sparsity": 0.5, "calib": ""}, "calib=''", "bundled"),
    ],
)
def test_bad_values_name_key_value_and_accepted(args, key, accepted):
    with pytest.raises(ConfigError) as err:
        build_config(args)
    message = str(err.value)
    assert key in message and accepted in message


def test_lm_eval_coerced_values_are_accepted():
    # lm-eval turns "0123" into 123, "true" into True, "0.3" into 0.3, "2:4" stays a string
    c = build_config({"method": "SparseGPT", "sparsity": "0.3", "seed": 123, "act_order": "true", "wbits": "4"})
    assert (c.method, c.sparsity, c.seed, c.act_order, c.wbits) == ("sparsegpt", 0.3, 123, True, 4)
    assert build_config({"method": "wanda", "pattern": "2:4", "sparsity": 0.5}).target_sparsity == 0.5
    assert build_config({"method": "gptq"}).wbits == 4  # gptq alone defaults to 4-bit
    assert build_config({"method": "magnitude", "pattern": "4:8"}).pattern == (4, 8)


def test_pattern_convention_keeps_n_of_m():
    assert parse_pattern("1:2") == (1, 2)
    assert parse_pattern(" 2 : 4 ") == (2, 4)
    assert parse_pattern("unstructured") is None
    assert build_config({"method": "wanda", "pattern": "1:4"}).target_sparsity == 0.75


def test_default_calibration_follows_the_papers():
    assert build_config({"method": "wanda", "sparsity": 0.5}).resolved_calib() == "c4"
    assert build_config({"method": "gptq"}).resolved_calib() == "wikitext2"
    assert build_config({"method": "gptq"}).resolved_calib(embedded_model=True) == "bundled"
    assert build_config({"method": "gptq", "calib": "C4"}).resolved_calib(embedded_model=True) == "c4"


def test_unknown_model_arg_is_refused():
    with pytest.raises(ConfigError, match="unknown model_arg 'sparsty'.*accepted"):
        split_model_args({"method": "wanda", "sparsty": 0.5})


def test_hflm_args_pass_through():
    config, kick, hflm = split_model_args({"method": "magnitude", "sparsity": 0.2, "dtype": "float32", "batch_size": 4,
                                           "no_cache": True})
    assert config.sparsity == 0.2 and kick == {"no_cache": True} and hflm == {"dtype": "float32", "batch_size": 4}


def test_errors_come_before_any_weight_loads(tmp_path):
    # a missing model folder would raise OSError from transformers; the config error must win
    with pytest.raises(ConfigError, match="method"):
        KickHFLM(pretrained=str(tmp_path / "no-such-model"), method="obs")
    with pytest.raises(ConfigError, match="unknown model_arg"):
        KickHFLM(pretrained=str(tmp_path / "no-such-model"), colour="blue")


def test_missing_or_empty_calibration_file_fails_before_loading(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    for path in (tmp_path / "missing.txt", empty):
        with pytest.raises(ConfigError, match="calib=.*no such non-empty file"):
            KickHFLM(pretrained=str(tmp_path / "no-such-model"), method="wanda", sparsity=0.5, calib=str(path))


def test_unwritable_cache_dir_fails_before_loading(tmp_path):
    from kick_models.cache import CacheError

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CacheError, match="not writable"):
        KickHFLM(pretrained=str(tmp_path / "no-such-model"), method="magnitude", sparsity=0.5, cache_dir=str(blocker / "sub"))
