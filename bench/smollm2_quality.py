"""SmolLM2 end to end, in one run: train on the GadgetCorp sample, then the style figures and the eval engines.

    .venv/bin/python bench/smollm2_quality.py [--work DIR] [--threads N]

1. builds the SmolLM2 base (reused in --work) and exports the bundled sample (`import --sample`, `export`);
2. trains with the preset the base's card names (no --preset: the README path), reporting time and peak RSS;
3. the seed question's reply and its chrF against the seed answer (target >= 90; exact match reported);
4. held-out split: base vs few-shot vs adapter (chrF, loss) through the vLLM engine (targets: adapter >= base + 30
   and > few-shot);
5. evaluation time, vLLM engine vs transformers engine, on the same replies (the sample's conversations used as
   one big held-out set: a timing load, not a quality figure), in the same run: vLLM on ~220 replies, and both
   engines on the first --compare-replies of them (transformers on all 220 takes over 25 minutes on 2 cores);
6. generation tokens/s in vLLM for the base and for the adapter (same prompts, same token count, ignore_eos).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SEED_QUESTION = "My SuperWidget is dead."
SEED_ANSWER = ("I'm sorry to hear you're having trouble with your SuperWidget! Have you tried plugging it into a "
               "different power outlet and ensuring the power switch is fully engaged?")


def timing_export(export: Path, out: Path, replies: int) -> Path:
    """An export whose test split holds `replies` assistant turns from the whole sample (train split kept)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [line for split in ("train", "validation", "test")
            for line in (export / f"{split}.jsonl").read_text().splitlines() if line.strip()]
    chosen, count = [], 0
    for line in rows:
        if count >= replies:
            break
        chosen.append(line)
        count += sum(m["role"] == "assistant" for m in json.loads(line)["messages"])
    (out / "train.jsonl").write_text((export / "train.jsonl").read_text())
    (out / "test.jsonl").write_text("\n".join(chosen) + "\n")
    return out


def generation_rate(settings, base: Path, adapter: Path, prompts: int = 64, tokens: int = 64) -> dict[str, float]:
    """Completion tokens/s of vLLM for the base and for the adapter: same prompts, exactly `tokens` each."""
    from core.prompts import USER, build_messages
    from serving.batch import vllm_replies

    messages = [build_messages(settings.system_prompt, [(USER, f"Question {i}: where is my order?")])
                for i in range(prompts)]
    rates = {}
    with vllm_replies(settings, base=base) as served:
        adapter_name = served._adapter_name(adapter)

        async def burst(model: str) -> float:
            started = time.perf_counter()
            bodies = [{"model": model, "messages": m, "temperature": 0, "max_tokens": tokens, "ignore_eos": True}
                      for m in messages]
            responses = await asyncio.gather(*(served.replica.request("POST", "/v1/chat/completions", b) for b in bodies))
            produced = sum(r.json()["usage"]["completion_tokens"] for r in responses)
            return produced / (time.perf_counter() - started)

        for label, model in (("warm-up", served.base_name), ("base", served.base_name), ("adapter", adapter_name),
                             ("base again", served.base_name), ("adapter again", adapter_name)):
            rates[label] = served._run(burst(model))
    rates.pop("warm-up")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=None, help="folder to keep the base, export and adapter in")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("HOUSESTYLE_CPU_THREADS", "1")))
    parser.add_argument("--timing-replies", type=int, default=220)
    parser.add_argument("--compare-replies", type=int, default=44, help="replies both engines score, for the ratio")
    args = parser.parse_args()
    os.environ["HOUSESTYLE_CPU_THREADS"] = str(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="housestyle-smollm2-"))
    work.mkdir(parents=True, exist_ok=True)

    from sacrebleu.metrics import CHRF

    from core.settings import Settings
    from plugin.evaluation import run_eval
    from tests.fixtures.models import export_sample, housestyle_env
    from trainer.base_model import build_base
    from trainer.generate import generate_reply
    from trainer.train import train_adapter

    settings = Settings(home=work / "home", cpu_threads=args.threads)
    started = time.perf_counter()
    base, built = build_base("smollm2", work / "smollm2", settings=settings)
    print(f"base: {base} ({'built' if built else 'reused'} in {time.perf_counter() - started:.0f}s)")
    export = work / "export"
    if not (export / "train.jsonl").is_file():
        export_sample(export)
    adapter = work / "adapter"
    if not adapter.exists():
        with housestyle_env(work / "train-home") as url:
            started = time.perf_counter()
            trained = train_adapter(base, export, adapter, settings=settings, database_url=url)
            metrics = trained.manifest.metrics
            print(f"train: preset {trained.manifest.hyperparameters['preset']}, {metrics['epochs_run']} epochs, "
                  f"{time.perf_counter() - started:.0f}s, {metrics['tokens_per_second']:.0f} tokens/s, "
                  f"memory {metrics['memory']}")
    reply = generate_reply(base, SEED_QUESTION, settings=settings, adapter=adapter)
    before = generate_reply(base, SEED_QUESTION, settings=settings)
    chrf = CHRF().sentence_score(reply, [SEED_ANSWER]).score
    print(f"seed before: {before!r}")
    print(f"seed after:  {reply!r}\nseed chrF {chrf:.1f} (target >= 90), exact: {reply == SEED_ANSWER}")

    report = run_eval(base, export, settings=settings, adapter=adapter, engine="vllm")
    print(report.markdown())
    a, b, f = report.adapter_scores, report.base, report.few_shot
    print(f"held-out: adapter - base = {a.chrf - b.chrf:+.1f} chrF (target >= +30), adapter - few-shot = "
          f"{a.chrf - f.chrf:+.1f} (target > 0)")

    timing = timing_export(export, work / "timing-export", args.timing_replies)
    times = {}
    for engine, limit in (("vllm", None), ("vllm", args.compare_replies), ("transformers", args.compare_replies)):
        started = time.perf_counter()
        timed = run_eval(base, timing, settings=settings, adapter=adapter, engine=engine, limit=limit)
        times[engine, limit] = time.perf_counter() - started
        print(f"eval {engine}: {timed.test_replies} replies x base, few-shot, adapter in {times[engine, limit]:.0f}s "
              f"(chrF base {timed.base.chrf:.1f}, few-shot {timed.few_shot.chrf:.1f}, "
              f"adapter {timed.adapter_scores.chrf:.1f})", flush=True)
    ratio = times["transformers", args.compare_replies] / times["vllm", args.compare_replies]
    print(f"eval on the same {args.compare_replies} replies: transformers / vLLM = {ratio:.1f}x")
    rates = generation_rate(settings, base, adapter)
    print("vLLM generation tokens/s: " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items())
          + f"; adapter / base {rates['adapter'] / rates['base']:.2f}")


if __name__ == "__main__":
    main()
