"""Training throughput: our packed, assistant-only LoRA fitting vs a naive padded one-conversation-per-row recipe.

Both recipes train the same LoRA (r 16, all linear layers) on the same conversations with the same model, in the
same run; the figure is real (non-pad) tokens per second, the ratio ours / naive.

    .venv/bin/python bench/train_throughput.py                  # CPU: tiny base on the GadgetCorp sample
    .venv/bin/python bench/train_throughput.py --device cuda --shape llama-8b   # GPU: 8B-shaped random Llama, bf16

SmolLM2 per preset, with peak memory and threads: bench/train_memory.py.

The naive recipe is the classic recipe: every conversation padded to --max-length, HF's built-in loss on labels.
A second baseline pads only to the longest conversation of each batch ("dynamic padding"), for reference.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.settings import Settings  # noqa: E402
from trainer.data import IGNORE, Example, packed_batches  # noqa: E402
from trainer.distributed import World, use_cpu_threads  # noqa: E402
from trainer.loss import CausalLMLoss, batch_loss  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}


def lora(model: torch.nn.Module) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))


def sample_examples(max_length: int, base: Path | None) -> tuple[Path, list[Example]]:
    """The tiny base (built unless given) and the GadgetCorp export's training conversations, in a temp folder."""
    from tests.fixtures.models import export_sample
    from trainer.base_model import build_tiny_base
    from trainer.data import encode_examples, load_export
    from trainer.model_loading import load_tokenizer

    root = Path(tempfile.mkdtemp(prefix="housestyle-bench-"))
    print("building the GadgetCorp export (and the tiny base unless --base) ...", file=sys.stderr)
    base = base or build_tiny_base(root / "base", settings=Settings())
    export = export_sample(root / "export")
    examples = encode_examples(load_tokenizer(base), load_export(export)["train"], max_length)
    return base, examples


def synthetic_examples(count: int, max_length: int, vocab: int, seed: int = 0) -> list[Example]:
    """Chat-like lengths (a long tail of short conversations) with ~half the tokens being replies."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        length = min(max_length, int(rng.lognormvariate(5.8, 0.6)))
        ids = [rng.randrange(vocab) for _ in range(length)]
        cut = length // 2
        examples.append(Example(ids, [IGNORE] * cut + ids[cut + 1 :] + [IGNORE]))
    return examples


def naive_batches(examples: list[Example], batch_size: int, pad_to: int | None, pad_id: int) -> list[dict]:
    """One conversation per row, padded (to `pad_to`, or to the longest in the batch), HF-style labels."""
    batches = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        width = pad_to or max(len(e.input_ids) for e in chunk)
        ids = torch.full((len(chunk), width), pad_id)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE)
        for row, example in enumerate(chunk):
            n = len(example.input_ids)
            ids[row, :n] = torch.tensor(example.input_ids)
            mask[row, :n] = 1
            labels[row, 1:n] = torch.tensor(example.targets[: n - 1])  # HF shifts labels itself
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels,
                        "tokens": sum(len(e.input_ids) for e in chunk)})
    return batches


def timed(steps: list, run_step, warmup: int = 1) -> float:
    """Real tokens per second over `steps` (after `warmup` untimed steps)."""
    for step in steps[:warmup]:
        run_step(step)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started, tokens = time.perf_counter(), 0
    for step in steps[warmup:]:
        tokens += run_step(step)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shape", default="tiny", choices=["tiny", "llama-8b"])
    parser.add_argument("--max-length", type=int, default=None, help="row length (default 256 tiny, 4096 llama-8b)")
    parser.add_argument("--batch-size", type=int, default=None, help="rows per step (default 8 tiny, 1 llama-8b)")
    parser.add_argument("--base", type=Path, default=None, help="tiny shape: an existing base folder to reuse")
    parser.add_argument("--steps", type=int, default=12, help="timed optimiser steps of ours")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        use_cpu_threads(Settings().cpu_threads)
    big = args.shape == "llama-8b"
    max_length = args.max_length or (4096 if big else 256)
    batch_size = args.batch_size or (1 if big else 8)

    if big:
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                             num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192)
        with torch.device(device):
            model = LlamaForCausalLM(config).to(torch.bfloat16)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        examples = synthetic_examples(4000, max_length, config.vocab_size)
        pad_id = 0
    else:
        from trainer.model_loading import load_model

        base, examples = sample_examples(max_length, args.base)
        model = load_model(base, device)
        pad_id = 0
    model = lora(model)
    params = sum(p.numel() for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    world = World(rank=0, size=1, device=device)

    loss_model = CausalLMLoss(model)

    def ours(batch) -> int:
        with world.autocast():
            loss, n = batch_loss(loss_model, batch.to(device))
        (loss / max(n, 1)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return batch.real_tokens

    def naive(batch: dict) -> int:
        with world.autocast():
            loss = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                         labels=batch["labels"].to(device), use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return batch["tokens"]

    packed = packed_batches(examples, max_length, batch_size, seed=0)[: args.steps + 1]
    used = sum(b.real_tokens for b in packed)
    # the baselines see the same conversations: as many as the packed steps held
    pool, count = [], 0
    for example in random.Random(0).sample(examples, len(examples)):
        if count >= used:
            break
        pool.append(example)
        count += len(example.input_ids)
    rows_per_step = max(1, batch_size * max_length // max(1, max(len(e.input_ids) for e in pool)))
    naive_rows = batch_size if big else rows_per_step
    ours_tps = timed(packed, ours)
    naive_tps = timed(naive_batches(pool, naive_rows, max_length, pad_id), naive)
    dynamic_tps = timed(naive_batches(pool, naive_rows, None, pad_id), naive)
    print(f"device {device}, shape {args.shape}, {params / 1e6:,.1f}M parameters, LoRA r16 all-linear, "
          f"row length {max_length}")
    print(f"ours (packed, assistant-only loss): {ours_tps:,.0f} tokens/s")
    print(f"naive (one conversation per row, padded to {max_length}): {naive_tps:,.0f} tokens/s")
    print(f"dynamic padding (one per row, padded to the batch's longest): {dynamic_tps:,.0f} tokens/s")
    print(f"ratio ours / naive: {ours_tps / naive_tps:.2f}x   ours / dynamic padding: {ours_tps / dynamic_tps:.2f}x")
    if device.type == "cuda":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        flops_per_token = 6 * params  # the usual model-FLOPs convention (forward + backward)
        if peak:
            print(f"MFU ours: {ours_tps * flops_per_token / (peak * 1e12):.1%} of {name} bf16 peak {peak:.0f} TFLOPS")


if __name__ == "__main__":
    main()
