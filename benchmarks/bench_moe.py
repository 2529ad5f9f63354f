"""Compression time of a mixture-of-experts model vs a dense model with the same active parameters.

A random Mixtral (E experts, top-k, expert width I) and a random Llama whose MLP is k·I wide have
the same attention and the same parameters per token; the MoE one has E/k times the MLP weights
to compress and one statistic per expert. Both get the same calibration ids, in one process, one
thread; each setting runs ``--repeats`` times and the table gives the median and the min-max.

    OMP_NUM_THREADS=1 python benchmarks/bench_moe.py --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch


def build(kind: str, hidden: int, inter: int, layers: int, experts: int, top_k: int):
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        MixtralConfig,
        MixtralForCausalLM,
    )

    torch.manual_seed(0)
    common = {"vocab_size": 512, "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "max_position_embeddings": 1024}
    if kind == "moe":
        return MixtralForCausalLM(MixtralConfig(**common, intermediate_size=inter, num_local_experts=experts,
                                                num_experts_per_tok=top_k)).eval()
    return LlamaForCausalLM(LlamaConfig(**common, intermediate_size=top_k * inter)).eval()


def active_params(model) -> int:
    """Block parameters one token uses (all of them for dense; top-k experts for the MoE)."""
    from kick_models.compression.blocks import find_decoder_blocks

    total = 0
    for block in find_decoder_blocks(model):
        for name, p in block.named_parameters():
            if "experts" in name:
                total += p.numel() * model.config.num_experts_per_tok // model.config.num_local_experts
            else:
                total += p.numel()
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--inter", type=int, default=256, help="expert width I (dense MLP: top_k * I)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from kick_models.compression import compress_model
    from kick_models.config import build_config

    ids = torch.randint(0, 512, (args.nsamples, args.seqlen), generator=torch.Generator().manual_seed(0))
    models = {k: build(k, args.hidden, args.inter, args.layers, args.experts, args.top_k) for k in ("dense", "moe")}
    settings = [{"method": "wanda", "sparsity": 0.5}, {"method": "sparsegpt", "pattern": "2:4"},
                {"method": "gptq", "wbits": 4}]
    print(f"active block params: dense {active_params(models['dense'])}, moe {active_params(models['moe'])}; "
          f"{args.nsamples} x {args.seqlen} tokens, {args.experts} experts top-{args.top_k}, "
          f"n = {args.repeats} runs each, one thread")
    print(f"{'setting':<22} {'dense s (min-max)':>20} {'moe s (min-max)':>20} {'moe/dense':>10}")
    for setting in settings:
        times = {}
        for kind, model in models.items():
            runs = []
            for _ in range(args.repeats):
                work = copy.deepcopy(model)
                start = time.perf_counter()
                compress_model(work, build_config(setting), ids)
                runs.append(time.perf_counter() - start)
            times[kind] = runs
        label = " ".join(str(v) for v in setting.values())
        cells = [f"{statistics.median(r):7.2f} ({min(r):.2f}-{max(r):.2f})" for r in times.values()]
        ratio = statistics.median(times["moe"]) / statistics.median(times["dense"])
        print(f"{label:<22} {cells[0]:>20} {cells[1]:>20} {ratio:>9.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
