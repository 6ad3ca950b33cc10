"""Learning from edits on a simulated loop: base vs SFT vs SFT+DPO vs SFT+KTO after one refresh, several seeds.

A hidden house style the simulated agents enforce by editing drafts (not the bundled sample's replies):
every reply opens with "Thanks for reaching out to GadgetCorp!", keeps at most two sentences of substance, and
closes with "Anything else I can help with?". The base model drafts a reply to each customer message of the
sample (their opening messages only); an agent sends the draft put into the house style (`house_style`), which
is recorded as an edit (or an approval when nothing changed) through the real recorder, in a real SQLite store.
One refresh: export chat / dpo / kto (same seed, same conversation-level split), train SFT, then DPO and KTO on
top of the SFT adapter. Each version answers the held-out customers; figures per version, mean ± spread over seeds:

- held-out edit distance: from its reply to what the agent finally sent for that conversation (the dpo export's
  chosen text), beside the distance of the draft the agent actually saw;
- simulated edit rate: the share of its replies the simulated agent would change (`house_style(r) != r`), and
  the edit distance of those corrections;
- preference accuracy: the share of held-out pairs whose chosen text it gives a higher log-probability.

In the same run (seed 0's export): tokens/s of TRL's `SFTTrainer` against HouseStyle's own fitting loop, same
LoRA, same rows (packed to --max-length), same assistant-only loss mask, one epoch each.

    .venv/bin/python bench/learning.py --seeds 0 1 2 --out learning.json          # SmolLM2 base (built if needed)
    .venv/bin/python bench/learning.py --base DIR --customers 40 --seeds 0        # a quicker, smaller run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

OPENING = "Thanks for reaching out to GadgetCorp!"
CLOSING = "Anything else I can help with?"
_GREETING = re.compile(r"^\s*(?:hi|hello|hey|dear|greetings|good (?:morning|afternoon|evening))(?:\s+\w+){0,2}\s*[!,.]\s*",
                       re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def house_style(reply: str) -> str:
    """What the simulated agent sends for `reply`: the hidden house style (idempotent: styled text is approved)."""
    body = reply.strip()
    if body.startswith(OPENING):
        body = body[len(OPENING):].strip()
    body = _GREETING.sub("", body)
    if body.endswith(CLOSING):
        body = body[: -len(CLOSING)].strip()
    sentences = [s for s in _SENTENCE.split(body) if s.strip()][:2]
    body = " ".join(sentences).strip()
    if body and body[-1] not in ".!?":
        body += "."
    body = body[:1].upper() + body[1:]
    return " ".join(part for part in (OPENING, body, CLOSING) if part)


def customer_messages(count: int) -> list[str]:
    """Distinct opening messages of the bundled sample's conversations (their replies are never used)."""
    from trainer.base_model import read_sample

    seen: dict[str, None] = {}
    for record in read_sample():
        opening = next(m["content"] for m in record["messages"] if m["role"] == "user")
        seen.setdefault(" ".join(opening.split()), None)
    customers = list(seen)
    random.Random(0).shuffle(customers)
    return customers[:count]


def stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "spread": statistics.stdev(values) if len(values) > 1 else 0.0}


def simulate_store(base: Path, customers: list[str], settings, max_new_tokens: int) -> dict[str, float]:
    """The base drafts a reply to every customer; agents edit each into the house style (real store rows)."""
    from collector import recorder
    from collector.pii.ingest import redact_everything, redactor_for
    from core.changes import same_text
    from core.db import open_store, session_scope
    from core.prompts import USER, build_messages
    from trainer.generate import greedy_replies, load_reply_model

    url = settings.resolved_database_url
    open_store(url)
    started = time.perf_counter()
    drafts = greedy_replies(load_reply_model(base, settings=settings),
                            [build_messages(settings.system_prompt, [(USER, c)]) for c in customers],
                            max_new_tokens=max_new_tokens, batch_size=16)
    drafting = time.perf_counter() - started
    edited = 0
    with session_scope(url) as session:
        for number, (customer, draft) in enumerate(zip(customers, drafts)):
            conversation = recorder.start_conversation(session, external_id=f"sim-{number}")
            recorder.add_message(session, conversation.id, "user", customer)
            row = recorder.record_draft(session, conversation.id, draft)
            final = house_style(draft)
            changed = not same_text(draft, final)
            edited += changed
            recorder.record_review(session, row.id, "edited" if changed else "approved", agent_id="sim",
                                   final_text=final)
    redact_everything(url, lambda: redactor_for(settings))
    return {"drafting_seconds": drafting, "base_edit_rate": edited / len(customers)}


def score_version(generator, models, adapter: Path | None, pairs: list[dict], max_new_tokens: int) -> dict[str, float]:
    from core.changes import edit_distance, same_text
    from trainer.preference import preference_margins
    from trainer.preference_eval import summarise

    replies = generator.replies([row["prompt"] for row in pairs], adapter=adapter, max_new_tokens=max_new_tokens)
    loaded = models.get(adapter)
    scores = summarise("", "", replies, pairs, preference_margins(loaded.model, loaded.tokenizer, pairs))
    corrections = [edit_distance(reply, house_style(reply)) for reply in replies]
    return {
        "held_out_edit_distance": scores.edit_distance,
        "draft_edit_distance": scores.draft_edit_distance,
        "simulated_edit_rate": sum(not same_text(r, house_style(r)) for r in replies) / len(replies),
        "correction_distance": statistics.fmean(corrections),
        "preference_accuracy": scores.preference_accuracy,
        "sample_reply": replies[0],
    }


def one_seed(seed: int, base: Path, root: Path, settings, args) -> dict:
    """One refresh on the simulated store: export, SFT, DPO and KTO on top; every version scored."""
    from collector.export import ExportOptions, export_dataset
    from collector.split import SplitRatios
    from trainer.generate import LoadedModels, TransformersReplies
    from trainer.preference import PreferenceConfig, train_preference
    from trainer.preference_eval import held_out_pairs
    from trainer.train import train_adapter

    folder = root / f"seed-{seed}"
    ratios = SplitRatios(train=0.75, validation=0.0, test=0.25)
    exports = {}
    for fmt in ("chat", "dpo", "kto"):
        manifest = export_dataset(ExportOptions(format=fmt, out=folder / fmt, seed=seed, ratios=ratios),
                                  settings=settings, progress=False)
        exports[fmt] = manifest.records
    timings = {}
    started = time.perf_counter()
    sft = train_adapter(base, folder / "chat", folder / "sft-adapter", settings=settings, preset=args.preset,
                        seed=seed)
    timings["sft"] = time.perf_counter() - started
    adapters = {"base": None, "sft": sft.path}
    for method in ("dpo", "kto"):
        started = time.perf_counter()
        trained = train_preference(base, folder / method, folder / f"{method}-adapter", PreferenceConfig(
            method=method, lr=args.preference_lr, beta=args.beta, epochs=args.preference_epochs, batch_size=4,
            max_length=256, seed=seed), sft_adapter=sft.path, settings=settings)
        timings[method] = time.perf_counter() - started
        adapters[f"sft+{method}"] = trained.path
    pairs = held_out_pairs(folder / "dpo")
    models = LoadedModels(base, settings)
    generator = TransformersReplies(models, batch_size=16)
    versions = {name: score_version(generator, models, adapter, pairs, args.max_new_tokens)
                for name, adapter in adapters.items()}
    return {"seed": seed, "records": exports, "held_out_pairs": len(pairs), "train_seconds": timings,
            "versions": versions}


def sft_throughput(base: Path, data: Path, settings, max_length: int) -> dict[str, float]:
    """Tokens/s of HouseStyle's fitting loop and of TRL's SFTTrainer: same LoRA, rows, loss mask; one epoch each."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from trainer.data import encode_examples, load_export
    from trainer.distributed import World
    from trainer.fitting import FitConfig, Fitter
    from trainer.model_loading import load_model, load_tokenizer
    from trainer.train import TrainConfig, add_lora

    tokenizer = load_tokenizer(base)
    conversations = load_export(data)["train"]
    examples = encode_examples(tokenizer, conversations, max_length)
    lora = TrainConfig(rank=16, alpha=32, dropout=0.0, lr=1e-3, epochs=1, batch_size=2, max_length=max_length)
    world = World(rank=0, size=1, device=torch.device("cpu"))
    torch.manual_seed(0)
    ours = Fitter(add_lora(load_model(base, world.device), lora, checkpointing=False),
                  FitConfig(lr=1e-3, epochs=1, batch_size=2, row_length=max_length, seed=0, warmup_steps=0,
                            description="HouseStyle loop"), world).fit(examples, [])
    # the same token ids and assistant mask (trainer.chat_format), handed to TRL already tokenised
    rows = [{"input_ids": e.input_ids, "assistant_masks": [0] + [int(t != -100) for t in e.targets[:-1]]}
            for e in examples]
    torch.manual_seed(0)
    model = add_lora(load_model(base, world.device), lora, checkpointing=False)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = SFTTrainer(model=model, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                             args=SFTConfig(output_dir=scratch, per_device_train_batch_size=2, num_train_epochs=1,
                                            learning_rate=1e-3, max_length=max_length, packing=True,
                                            padding_free=True, report_to=[],  # assistant_masks column: the loss mask
                                            save_strategy="no", use_cpu=True, logging_steps=1000,
                                            disable_tqdm=True, dataloader_num_workers=0, lr_scheduler_type="constant"))
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    tokens = sum(len(e.input_ids) for e in examples)
    return {"ours_tokens_per_second": ours.tokens_per_second, "trl_tokens_per_second": tokens / seconds,
            "trl_over_ours": (tokens / seconds) / ours.tokens_per_second, "tokens": tokens,
            "ours_train_loss": ours.train_loss, "trl_train_loss": trainer.state.log_history[-1].get("train_loss")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="a base model folder; default: SmolLM2 built under the work dir")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--customers", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--preference-lr", type=float, default=1e-4)
    parser.add_argument("--preference-epochs", type=int, default=2)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a new temp folder)")
    parser.add_argument("--out", type=Path, default=Path("learning.json"))
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()

    root = args.work or Path(tempfile.mkdtemp(prefix="housestyle-learning-"))
    root.mkdir(parents=True, exist_ok=True)
    os.environ["HOUSESTYLE_HOME"] = str(root / "home")
    os.environ["HOUSESTYLE_DATABASE_URL"] = f"sqlite:///{root / 'home' / 'store.db'}"
    (root / "home").mkdir(exist_ok=True)
    from core.settings import get_settings
    from trainer.base_model import build_base
    from trainer.distributed import use_cpu_threads

    get_settings.cache_clear()
    settings = get_settings()
    use_cpu_threads(settings.cpu_threads)
    base = args.base or build_base("smollm2", root / "smollm2", settings=settings)[0]
    load = os.getloadavg()
    started = time.perf_counter()
    store = simulate_store(base, customer_messages(args.customers), settings, args.max_new_tokens)
    print(f"simulated store: base drafts edited {store['base_edit_rate']:.0%}", file=sys.stderr)
    results = []
    for seed in args.seeds:
        results.append(one_seed(seed, base, root, settings, args))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "versions"}), file=sys.stderr)
        for name, figures in results[-1]["versions"].items():
            print(f"  seed {seed} {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()
                                                         if isinstance(v, float)), file=sys.stderr)
    summary = {name: {metric: stats([r["versions"][name][metric] for r in results])
                      for metric in ("held_out_edit_distance", "draft_edit_distance", "simulated_edit_rate",
                                     "correction_distance", "preference_accuracy")}
               for name in results[0]["versions"]}
    report = {"base": str(base), "customers": args.customers, "seeds": args.seeds, "store": store,
              "summary": summary, "runs": results, "load_average_at_start": load,
              "cpu_threads": settings.cpu_threads, "args": {k: str(v) for k, v in vars(args).items()}}
    if not args.skip_throughput:
        report["sft_throughput"] = sft_throughput(base, root / f"seed-{args.seeds[0]}" / "chat", settings, 256)
    report["wall_seconds"] = time.perf_counter() - started
    report["load_average_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'version':<10} {'held-out edit dist':>20} {'sim. edit rate':>16} {'pref. acc.':>12}")
    for name, figures in summary.items():
        cells = [f"{figures[m]['mean']:.3f} ± {figures[m]['spread']:.3f}"
                 for m in ("held_out_edit_distance", "simulated_edit_rate", "preference_accuracy")]
        print(f"{name:<10} {cells[0]:>20} {cells[1]:>16} {cells[2]:>12}")
    print(f"drafts agents saw: held-out edit distance {summary['base']['draft_edit_distance']['mean']:.3f}")
    if "sft_throughput" in report:
        t = report["sft_throughput"]
        print(f"SFT tokens/s: HouseStyle loop {t['ours_tokens_per_second']:.0f}, TRL SFTTrainer "
              f"{t['trl_tokens_per_second']:.0f} (TRL / ours {t['trl_over_ours']:.2f})")


if __name__ == "__main__":
    main()
