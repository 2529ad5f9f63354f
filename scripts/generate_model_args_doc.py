"""Writes docs/model_args.md from the code: every built-in method's ``Param``s and kick-hf's own arguments.

    python scripts/generate_model_args_doc.py          # rewrite
    python scripts/generate_model_args_doc.py --check  # exit 1 if the page is stale (used by the tests)

Defaults of the compression settings come from ``CompressionConfig``; a method's rows come from its
registry entry. kick-hf's own arguments get their meaning from ``OWN_ARGS`` below, and the run stops
when an argument the code accepts has no row there (or a row names an argument the code does not accept).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "model_args.md"

# kick-hf's own arguments: name -> (values, default when the config has none, meaning)
OWN_ARGS: dict[str, tuple[str, str | None, str]] = {
    "method": ("`none` or a registered method (below)", None,
               "what to do to the weight matrices of the decoder blocks"),
    "sparsity": ("number in [0, 1)", None, "fraction of weights set to zero (unstructured)"),
    "pattern": ("`unstructured` or `N:M` (`2:4`, `4:8`, …)", "`unstructured`",
                "N:M keeps N of every M consecutive input weights of each row; `sparsity` may be omitted or must equal "
                "1 − N/M"),
    "wbits": ("`2`, `3`, `4`, `8`, `16`", "`4` for a quantizer, else `16`",
              "bit width; with a pruning method, prune then quantize with mask-aware GPTQ; 16 = none"),
    "group_size": ("positive integer or `-1`", None, "quantization group (−1 = one grid per output channel)"),
    "sym": ("`true`/`false`", None, "symmetric quantization grid"),
    "act_order": ("`true`/`false`", None, "GPTQ visits columns by decreasing Hessian diagonal (static groups)"),
    "damp": ("number in (0, 1]", None, "Hessian dampening, fraction of the mean diagonal"),
    "blocksize": ("positive integer", None, "columns per lazy-update block (SparseGPT, GPTQ)"),
    "calib": ("`c4`, `wikitext2`, `bundled`, or a `.txt`/`.jsonl` path", "the method's; `bundled` on the embedded model",
              "calibration data"),
    "nsamples": ("positive integer", None, "calibration windows"),
    "seqlen": ("positive integer", None, "tokens per calibration window (capped at the model's context)"),
    "seed": ("integer", None, "seed of the one RNG that draws calibration windows"),
    "sparsity_profile": ("`uniform`, `owl`", None, "OWL: outlier-weighed per-block sparsity with the same mean"),
    "owl_m": ("number > 0", None, "OWL outlier threshold M"),
    "owl_lambda": ("number in [0, 1)", None, "OWL ratio spread λ"),
    "propagate": ("`compressed`, `dense`", None, "which outputs feed the next block during calibration"),
    "true_sequential": ("`true`/`false`", None,
                        "inside a block, compress q/k/v, then o, then gate/up, then down, re-collecting statistics"),
    "skip_experts": ("`true`/`false`", None, "leave routed mixture-of-experts experts dense (recorded in the results)"),
    "cache_dir": ("path", "`$KICK_CACHE_DIR` or `~/.cache/kick`", "compressed-model cache folder"),
    "no_cache": ("`true`/`false`", "`false`", "compress afresh and store nothing"),
    "cache_lock_timeout": ("seconds ≥ 0, or `-1`", "`$KICK_CACHE_LOCK_TIMEOUT`, else `-1` (no limit)",
                           "how long to wait for another process compressing the same model and settings"),
    "keep_grids": ("`true`/`false`", "`false`", "keep GPTQ scales/zeros on the model for a packed export (no cache)"),
    "fidelity": ("`true`/`false`", "`true`", "measure KL(dense ‖ compressed) and top-1 agreement on held-out text"),
}


def _own_keys() -> list[str]:
    from kick_models.config import compression_keys
    from kick_models.lm import KICK_KEYS

    method_params = {p.name for m in _methods().values() for p in m.params}
    return [k for k in (*compression_keys(), *KICK_KEYS) if k not in method_params]


def _methods():
    from kick_models.compression.registry import all_methods

    return {name: m for name, m in all_methods().items() if m.source == "built-in"}


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _shown(value) -> str:
    """A default as a user types it: ``true``, ``5e-05``, ``wanda``."""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def _default(name: str, given: str | None) -> str:
    if given is not None:
        return given
    from kick_models.config import CompressionConfig

    fields = {f.name: f.default for f in dataclasses.fields(CompressionConfig)}
    return f"`{_shown(fields[name])}`"


def render() -> str:
    own = _own_keys()
    missing, extra = sorted(set(own) - set(OWN_ARGS)), sorted(set(OWN_ARGS) - set(own))
    if missing or extra:
        raise SystemExit(f"OWN_ARGS is out of step with kick-hf: undocumented {missing}, not accepted {extra}")
    lines = [
        "# Model arguments of `kick-hf`",
        "",
        "<!-- generated by scripts/generate_model_args_doc.py from the code - do not edit -->",
        "",
        "Every `hf` model argument (`pretrained`, `revision`, `dtype`, `device_map`, `parallelize`, `trust_remote_code`,",
        "`peft`, …) is accepted as with `--model hf`; kick's own arguments below are removed before the rest reach",
        "`HFLM`. An unknown argument, a bad value, or a method's argument given without that method is refused",
        "before any weight loads: `kick-hf: invalid model_arg KEY=VALUE; accepted: …`. Without `pretrained`, the",
        "embedded SmolLM2-135M-Instruct is used. Effective settings are written to the results JSON under",
        "`config.kick`; arguments a configuration does not use are logged and listed under `config.kick.ignored`.",
        "",
        "## kick's own arguments",
        "",
        "| argument | values | default | meaning |",
        "|---|---|---|---|",
    ]
    for name in own:
        values, default, meaning = OWN_ARGS[name]
        lines.append(f"| `{name}` | {_cell(values)} | {_cell(_default(name, default))} | {_cell(meaning)} |")
    lines += ["", "## Methods", "",
              "Each method is one registry entry (`kick_models.compression.methods`); plug-ins register the same way",
              "([plugins.md](plugins.md)) and their arguments are checked alike.", "",
              "| method | kind | what | statistics | shared settings it reads |", "|---|---|---|---|---|"]
    for m in _methods().values():
        stats = ", ".join(f"`{s}`" for s in sorted(m.stats)) or "none (no calibration data)"
        uses = ", ".join(f"`{u}`" for u in sorted(m.uses)) or "—"
        lines.append(f"| `{m.name}` | {m.kind} | {_cell(m.summary)} | {stats} | {uses} |")
    for m in _methods().values():
        if not m.params:
            continue
        lines += ["", f"### `method={m.name}`", "", "| argument | values | default | meaning |", "|---|---|---|---|"]
        for p in m.params:
            lines.append(f"| `{p.name}` | {_cell(p.accepted())} | `{_shown(p.default)}` | {_cell(p.help)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--check", action="store_true", help="exit 1 if docs/model_args.md is stale")
    check = args.parse_args(argv).check
    text = render()
    if check:
        if not PAGE.is_file() or PAGE.read_text(encoding="utf-8") != text:
            sys.stderr.write(f"{PAGE.relative_to(REPO)} is stale; run python scripts/generate_model_args_doc.py\n")
            return 1
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
