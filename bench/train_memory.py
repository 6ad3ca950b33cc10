"""SmolLM2 LoRA training: tokens/s and peak RSS per preset, ours vs the naive padded recipe, 1 vs 2 threads.

Every measurement is a fresh process (so its peak RSS is its own) training the same LoRA (the preset's rank, all
linear layers) on the GadgetCorp sample's conversations with the same base, in the same run:
- ours: packed rows, the memory plan under HOUSESTYLE_TRAIN_MEMORY_GIB (micro-batches, checkpointing if needed),
  the chunked loss over target tokens only;
- naive: one conversation per row padded to the preset's max length, HF's built-in loss on full logits, no
  micro-batching (at --naive-batch rows: the preset's 8 x 1024 rows are what the kernel killed at 21 GB).

    .venv/bin/python bench/train_memory.py [--base DIR] [--steps 3] [--threads 1 2] [--presets small default]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def worker(args: argparse.Namespace) -> None:
    import torch  # first: the wait policy is the one the parent put in the environment, not trainer's default

    from core.settings import Settings
    from trainer.data import encode_examples, load_export, packed_batches
    from trainer.distributed import World, use_cpu_threads
    from trainer.fitting import FitConfig, Fitter
    from trainer.model_loading import load_model, load_tokenizer
    from trainer.train import add_lora, canonical_order, memory_plan, train_config

    settings = Settings(cpu_threads=args.threads, train_memory_gib=args.cap_gib)
    use_cpu_threads(args.threads)
    torch.manual_seed(0)
    config = train_config(args.preset)
    tokenizer = load_tokenizer(args.base)
    examples = encode_examples(tokenizer, canonical_order(load_export(args.export)["train"]), config.max_length)
    world = World(rank=0, size=1, device=torch.device("cpu"))
    model = load_model(args.base, world.device)
    tokens, seconds, plan_text = 0, 0.0, ""
    if args.mode == "ours":
        plan = memory_plan(model, config, settings, world)
        plan_text = f"micro-batch {plan.micro_batch_size}, checkpointing {plan.checkpointing}, " \
                    f"estimated {plan.estimated_peak / 2**30:.1f} GiB"
        model = add_lora(model, config, plan.checkpointing)
        fitter = Fitter(model, FitConfig(lr=config.lr, epochs=1, batch_size=config.batch_size,
                                         row_length=config.max_length, micro_batch_size=plan.micro_batch_size), world)
        batches = packed_batches(examples, config.max_length, config.batch_size, seed=0)[: args.steps + 1]
        for index, batch in enumerate(batches):
            started = time.perf_counter()
            fitter._accumulate(batch)
            fitter.optimizer.step()
            fitter.optimizer.zero_grad(set_to_none=True)
            if index:  # the first step warms up
                tokens, seconds = tokens + batch.real_tokens, seconds + time.perf_counter() - started
    else:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=config.rank, lora_alpha=config.alpha,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
        pool = random.Random(0).sample(examples, len(examples))
        rows = args.naive_batch
        for index in range(args.steps + 1):
            chunk = pool[index * rows : (index + 1) * rows]
            ids = torch.zeros((rows, config.max_length), dtype=torch.long)
            mask = torch.zeros_like(ids)
            labels = torch.full_like(ids, -100)
            for row, example in enumerate(chunk):
                n = len(example.input_ids)
                ids[row, :n], mask[row, :n] = torch.tensor(example.input_ids), 1
                labels[row, 1:n] = torch.tensor(example.targets[: n - 1])
            started = time.perf_counter()
            model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if index:
                tokens += sum(len(e.input_ids) for e in chunk)
                seconds += time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({"tokens_per_second": tokens / seconds, "peak_rss_gib": peak, "plan": plan_text}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=None, help="a built SmolLM2 base (built into a temp dir if not)")
    parser.add_argument("--export", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=3, help="timed optimiser steps (after one warm-up step)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--presets", nargs="+", default=["small", "default"])
    parser.add_argument("--naive-batch", type=int, default=2)
    parser.add_argument("--cap-gib", type=float, default=8.0, help="HOUSESTYLE_TRAIN_MEMORY_GIB for ours")
    parser.add_argument("--modes", nargs="+", default=["ours", "naive"])
    parser.add_argument("--wait-policies", nargs="+", default=["default"],
                        help="OpenMP wait policies to compare for 2+ threads: default (spin, then sleep), passive")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="ours", help=argparse.SUPPRESS)
    parser.add_argument("--preset", default="small", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.threads = args.threads[0]
        worker(args)
        return
    root = Path(tempfile.mkdtemp(prefix="housestyle-train-memory-"))
    if args.base is None:
        from core.settings import Settings
        from trainer.base_model import build_base

        args.base, _ = build_base("smollm2", root / "smollm2", settings=Settings())
    if args.export is None:
        from tests.fixtures.models import export_sample

        args.export = export_sample(root / "export")
    print(f"SmolLM2-135M-Instruct LoRA on the GadgetCorp sample, {args.steps} timed steps per line")
    print("| preset | recipe | threads | tokens/s | peak RSS GiB | plan |\n|---|---|---:|---:|---:|---|")
    for preset in args.presets:
        for threads, policy in [(t, p) for t in args.threads for p in (args.wait_policies if t > 1 else ["default"])]:
            # the worker imports torch before trainer, so without this variable libgomp keeps its spinning default
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            env.update({"OMP_WAIT_POLICY": "PASSIVE"} if policy == "passive" else {})
            shown = f"{threads}" + (" passive" if policy == "passive" else "")
            results = {}
            for mode in args.modes:
                command = [sys.executable, __file__, "--worker", "--mode", mode, "--preset", preset, "--threads",
                           str(threads), "--base", str(args.base), "--export", str(args.export), "--steps",
                           str(args.steps), "--naive-batch", str(args.naive_batch), "--cap-gib", str(args.cap_gib)]
                done = subprocess.run(command, capture_output=True, text=True, env=env)
                if done.returncode != 0:
                    print(f"| {preset} | {mode} | {shown} | failed: {done.stderr.strip().splitlines()[-1:]} |")
                    continue
                result = json.loads(done.stdout.strip().splitlines()[-1])
                results[mode] = result
                label = mode if mode == "ours" else f"naive ({args.naive_batch} padded rows)"
                print(f"| {preset} | {label} | {shown} | {result['tokens_per_second']:.0f} | "
                      f"{result['peak_rss_gib']:.1f} | {result['plan']} |", flush=True)
            if len(results) == 2:
                ratio = results["ours"]["tokens_per_second"] / results["naive"]["tokens_per_second"]
                print(f"| {preset} | ours / naive | {shown} | {ratio:.2f}x | | |", flush=True)


if __name__ == "__main__":
    main()
