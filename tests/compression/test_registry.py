"""The method registry: listing, validation before any weight loads, plug-ins through entry points,
collisions, the cache key, and no method name spelled out anywhere else in the package."""

import ast
import dataclasses
import re
import sys
import types
from importlib import metadata
from pathlib import Path

import pytest

from kick_models import cache
from kick_models.compression import registry
from kick_models.compression.methods import BUILTIN_METHODS
from kick_models.config import CompressionConfig, ConfigError, build_config

SRC = Path(__file__).resolve().parents[2] / "src"
BUILTIN = [m.name for m in BUILTIN_METHODS]


def _toy_prune(weights, stats, job):
    from kick_models.compression.magnitude import prune_magnitude

    return [prune_magnitude(w, sparsity=job.sparsity, group="row") for w in weights]


@pytest.fixture
def plugins(monkeypatch):
    """Install fake ``kick.methods`` entry points: ``plugins({"name": Method or callable})``."""
    module = types.ModuleType("kick_fake_plugins")
    monkeypatch.setitem(sys.modules, "kick_fake_plugins", module)

    def install(objects):
        eps = []
        for name, obj in objects.items():
            attr = f"obj_{len(eps)}"
            setattr(module, attr, obj)
            eps.append(metadata.EntryPoint(name, f"kick_fake_plugins:{attr}", registry.ENTRY_POINT_GROUP))
        monkeypatch.setattr(registry.metadata, "entry_points",
                            lambda group=None: eps if group == registry.ENTRY_POINT_GROUP else [])
        registry.reload()

    yield install
    registry.reload()


def toy(name="rowmag", version="1", **kw):
    return registry.Method(name=name, kind="prune", version=version, summary="row-wise magnitude (test)",
                           prune=_toy_prune, **kw)


def test_every_builtin_is_listed_with_its_statistics_and_parameters():
    methods = registry.all_methods()
    assert list(methods)[: len(BUILTIN)] == BUILTIN
    assert set(BUILTIN) >= {"magnitude", "wanda", "sparsegpt", "gptq", "rtn", "awq", "ria", "dsnot"}
    expected_stats = {"magnitude": set(), "wanda": {"col_norms"}, "sparsegpt": {"hessian"}, "gptq": {"hessian"},
                      "rtn": set(), "awq": {"abs_mean", "hessian"}, "ria": {"col_norms"},
                      "dsnot": {"col_norms", "mean", "hessian"}}
    for name, stats in expected_stats.items():
        method = methods[name]
        assert set(method.stats) == stats and set(method.stats) <= set(registry.STATISTICS)
        described = method.describe()
        assert all(s in described for s in stats) and f"v{method.version}" in described
        for p in method.params:
            assert p.name in described and p.accepted()
    assert {p.name for p in methods["dsnot"].params} >= {"dsnot_init", "dsnot_cycles"}
    assert [p.choices for p in methods["dsnot"].params if p.name == "dsnot_init"] == [("wanda", "sparsegpt")]
    assert {m.kind for m in methods.values()} == {"prune", "quantize", "load-time"}
    load_time = {name for name, m in methods.items() if m.kind == "load-time"}
    assert load_time == {"bnb8", "bnb4", "torchao", "hqq", "quanto"}
    assert all(methods[name].load_time is not None and not methods[name].stats for name in load_time)


def test_unknown_method_lists_every_method_including_plugins(plugins):
    plugins({"rowmag": toy()})
    with pytest.raises(ConfigError) as err:
        build_config({"method": "obs"})
    message = str(err.value)
    assert "method='obs'" in message
    for name in ["none", *BUILTIN, "rowmag"]:
        assert name in message


@pytest.mark.parametrize(("args", "needle"), [
    ({"method": "ria", "sparsity": 0.5, "ria_a": "big"}, "ria_a='big'; accepted: a number in [0, 4]"),
    ({"method": "ria", "sparsity": 0.5, "ria_a": -1}, "ria_a=-1; accepted: a number in [0, 4]"),
    ({"method": "dsnot", "sparsity": 0.5, "dsnot_init": "magnitude"}, "dsnot_init='magnitude'; accepted: wanda | sparsegpt"),
    ({"method": "dsnot", "sparsity": 0.5, "dsnot_cycles": 1.5}, "dsnot_cycles=1.5; accepted: an integer"),
    ({"method": "wanda", "sparsity": 0.5, "awq_grid": 10}, "awq_grid=10; accepted: only with method=awq"),
    ({"method": "awq", "sparsity": 0.5}, "method='awq'; accepted: magnitude | wanda"),
    ({"method": "rtn", "pattern": "2:4"}, "rtn alone takes no sparsity or pattern"),
])
def test_bad_method_parameters_fail_with_one_clear_error(args, needle):
    with pytest.raises(ConfigError) as err:
        build_config(args)
    assert needle in str(err.value)


def test_errors_come_before_any_weight_loads(monkeypatch):
    """kick-hf's arg split (what runs before HFLM loads anything) refuses bad methods and params."""
    import transformers

    from kick_models.lm import split_model_args

    def boom(*a, **k):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    with pytest.raises(ConfigError, match="method='nope'"):
        split_model_args({"method": "nope"})
    with pytest.raises(ConfigError, match="ria_permute='maybe'"):
        split_model_args({"method": "ria", "pattern": "2:4", "ria_permute": "maybe"})
    config, _, hflm = split_model_args({"method": "ria", "pattern": "2:4", "ria_permute": "true", "batch_size": 2})
    assert config.params["ria_permute"] is True and "ria_permute" not in hflm


def test_plugin_is_usable_like_a_builtin(plugins):
    plugins({"rowmag": toy(params=(registry.Param("rowmag_k", int, 3, low=1),))})
    config = build_config({"method": "rowmag", "sparsity": 0.25, "rowmag_k": "7"})
    assert config.prunes and config.params == {"rowmag_k": 7} and not config.needs_calibration
    assert config.to_dict()["method_version"] == "1"
    from kick_models.config import compression_keys

    assert "rowmag_k" in compression_keys()


def test_reserved_params_are_exactly_kicks_own_model_args():
    """The registry cannot import the config (the config reads the registry), so it lists the names; they must not drift."""
    assert registry.RESERVED_PARAMS == {f.name for f in dataclasses.fields(CompressionConfig)}


def _raises():
    raise ImportError("No module named 'torch_sparse_magic'")


@pytest.mark.parametrize("installed, skipped, reason", [
    ({"wanda": toy(name="wanda")}, "wanda", "'wanda', which is a built-in method"),
    ({"rowmag": toy(params=(registry.Param("sparsity", float, 0.1),))}, "rowmag",
     r"\['sparsity'\] that are kick's own model_args"),
    ({"alias": toy(name="rowmag")}, "alias", "registers 'rowmag' under the name 'alias'"),
    ({"broken": _raises}, "broken", "failed to load: ImportError"),
    ({"odd": lambda: 42}, "odd", "gave int; accepted: a kick_models.compression.registry.Method"),
])
def test_a_broken_or_colliding_plugin_is_skipped_with_one_warning(plugins, caplog, installed, skipped, reason):
    caplog.set_level("WARNING")
    plugins({**installed, "rowmag2": toy(name="rowmag2")})
    names = registry.method_names()
    assert set(BUILTIN) <= set(names) and "rowmag2" in names  # every other method still works
    assert build_config({"method": "magnitude", "sparsity": 0.5}).method == "magnitude"
    warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warnings) == 1 and f"plug-in {skipped!r} skipped" in warnings[0]
    assert re.search(reason, warnings[0]) and re.search(reason, registry.skipped_plugins()[skipped])
    if skipped not in BUILTIN:
        with pytest.raises(ConfigError, match=rf"method={skipped!r}; accepted: .*the plug-in {skipped!r} was skipped"):
            build_config({"method": skipped, "sparsity": 0.5})


def test_two_plugins_with_one_name_are_both_skipped(plugins, monkeypatch, caplog):
    caplog.set_level("WARNING")
    plugins({"rowmag": toy(name="rowmag")})
    eps = list(registry.metadata.entry_points(group=registry.ENTRY_POINT_GROUP)) * 2
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group=None: eps if group == registry.ENTRY_POINT_GROUP else [])
    registry.reload()
    assert "rowmag" not in registry.method_names() and "magnitude" in registry.method_names()
    assert "is registered by both" in registry.skipped_plugins()["rowmag"]


def test_malformed_method_is_refused_at_definition():
    with pytest.raises(registry.MethodError, match="stats"):
        registry.Method(name="x", kind="prune", version="1", summary="", prune=_toy_prune, stats=frozenset({"grads"}))
    with pytest.raises(registry.MethodError, match="name 'Bad-Name'"):
        registry.Method(name="Bad-Name", kind="prune", version="1", summary="", prune=_toy_prune)


def test_cache_key_changes_with_the_plugin_version(plugins):
    def key():
        config = build_config({"method": "rowmag", "sparsity": 0.5})
        return cache.cache_key(cache.key_parts(pretrained="org/tiny", config=config, calib_info=None))

    plugins({"rowmag": toy(version="1")})
    first = key()
    assert key() == first
    plugins({"rowmag": toy(version="2")})
    assert key() != first


def test_cache_key_changes_with_a_method_parameter():
    def key(**extra):
        config = build_config({"method": "ria", "sparsity": 0.5, **extra})
        return cache.cache_key(cache.key_parts(pretrained="org/tiny", config=config, calib_info=None))

    assert key(ria_a=1.0) != key() == key(ria_a=0.5)


def test_engine_dispatch_runs_a_plugin(plugins, tiny_llama):
    from kick_models.compression import compress_model

    plugins({"rowmag": toy()})
    model = tiny_llama()
    summary = compress_model(model, build_config({"method": "rowmag", "sparsity": 0.25}), None)
    assert summary["method"] == "rowmag"
    w = model.model.layers[0].mlp.down_proj.weight
    assert ((w == 0).sum(1) == w.shape[1] // 4).all()  # row-wise, exactly as the plug-in decided


# Method names may appear as string literals only in the registry and the method modules. The
# "gptq" checkpoint *format* (kick-compress --format gptq, the HF quantization_config) is a file
# format name, not the method.
_METHOD_MODULES = {"registry.py", "methods.py", "magnitude.py", "wanda.py", "sparsegpt.py", "gptq.py",
                   "quant.py", "awq.py", "ria.py", "dsnot.py"}
_FORMAT_FILES = {"export.py", "export_gptq.py"}
# transformers' quant_method names of other libraries' checkpoint formats (not kick's methods)
_EXTERNAL_FORMATS = {"checkpoint.py": {"gptq", "awq"}}


def test_no_method_name_is_a_string_literal_outside_the_method_modules():
    names = set(BUILTIN)
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path.parent.name == "compression" and path.name in _METHOD_MODULES:
            continue
        allowed = {"gptq"} if path.name in _FORMAT_FILES else _EXTERNAL_FORMATS.get(path.name, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value.strip().lower()
                if text in names - allowed:
                    offenders.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.value!r}")
    assert not offenders, "method names outside the registry:\n" + "\n".join(offenders)
