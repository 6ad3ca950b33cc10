"""What differential privacy costs and buys: canary exposure, extraction hits, held-out chrF, training time and memory,
with DP off and at epsilon 1, 4 and 8 (per customer, delta 1e-5), on the tiny base (or --base) and the sample.

Every (setting, seed) runs in a fresh process (its peak RSS is its own): train the candidate on the sample export
(DP: `trainer.dp`, Poisson-sampled customers; off: the plain recipe; `--epsilons base clip` add the base alone and
DP's sampling and clipping without noise, for scale), score its greedy replies on the held-out split
(chrF), save it, then `housestyle audit` it (`trainer.audit.run_audit`): a shadow adapter trained by the same
recipe with canaries planted 1, 4 and 16 times (exposure in bits, never-planted canaries as the baseline) and the
extraction probe on the candidate (verbatim overlaps with other customers' conversations, personal values of the
training text repeated). The held-out replies are also scored as an agent would (`simulated_correction_rate`: the
share an agent would have changed). Figures are mean ± spread over seeds.

    .venv/bin/python bench/memorisation.py --seeds 0 1 2 --out memorisation.json
    .venv/bin/python bench/memorisation.py --epochs 6 --seeds 0 --epsilons off 8      # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DELTA = 1e-5


def prepare(work: Path, base: Path | None) -> tuple[Path, Path]:
    """The tiny base (unless --base) and the bundled sample imported, redacted and exported as chat JSONL."""
    from collector.export import ExportOptions, export_dataset
    from collector.importer import import_file
    from collector.pii.ingest import redact_everything, redactor_for
    from collector.sample import SAMPLE_PATH
    from core.db import open_store
    from core.settings import get_settings
    from trainer.base_model import build_tiny_base

    os.environ["HOUSESTYLE_HOME"] = str(work / "home")
    get_settings.cache_clear()
    settings = get_settings()
    if base is None:
        base = work / "tiny-base"
        if not base.exists():
            build_tiny_base(base, settings=settings)
    data = work / "export"
    if not data.exists():
        url = settings.resolved_database_url
        open_store(url)
        import_file(SAMPLE_PATH, url=url, source="sample")
        redact_everything(url, lambda: redactor_for(settings))
        export_dataset(ExportOptions(out=data, format="chat"), settings=settings, progress=False)
    return base, data


def worker(args: argparse.Namespace) -> None:
    """One (setting, seed): train, score, audit; prints one JSON line."""

    from core.adapter_manifest import MANIFEST_NAME
    from core.settings import get_settings
    from trainer.audit.runner import AuditOptions, run_audit
    from trainer.data import load_export
    from trainer.distributed import current_world
    from trainer.dp.customers import train_rows
    from trainer.dp.fitting import PrivacyConfig
    from trainer.dp.train import customer_groups, fit_private
    from trainer.evaluate import held_out_split, score, simulated_correction_rate
    from trainer.generate import ReplyModel, greedy_replies
    from trainer.model_loading import load_tokenizer, resolve_base
    from trainer.train import _fit, preset_for, train_config

    settings = get_settings()
    base_path, data = resolve_base(args.base), Path(args.data)
    overrides = {"epochs": args.epochs} if args.epochs else {}
    config = train_config(preset_for(base_path, None), seed=args.seed, **overrides)
    splits = load_export(data)
    world = current_world(settings)
    started = time.perf_counter()
    dp = None
    if args.epsilon == "base":  # no training: what the base alone scores, for scale
        from trainer.model_loading import load_model

        result, model = None, load_model(base_path, world.device)
    elif args.epsilon == "off":
        result, model = _fit(base_path, splits, config, world, settings)
    else:  # "clip": DP's sampling and clipping without noise, to tell the noise's cost from the few large steps'
        noise = 0.0 if args.epsilon == "clip" else None
        privacy = PrivacyConfig(epsilon=None if noise == 0.0 else float(args.epsilon), delta=DELTA,
                                noise_multiplier=noise, noise_seed=args.seed)
        customers = customer_groups(splits["train"], train_rows(data))
        result, spent, model = fit_private(base_path, splits, customers, config, privacy, world, settings)
        dp = spent.as_dict()
    train_seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    tokenizer = load_tokenizer(base_path)
    tokenizer.padding_side = "left"
    _, _, tasks = held_out_split(data, settings=settings)
    replies = greedy_replies(ReplyModel(tokenizer, model.eval(), world.device), [prompt for prompt, _ in tasks],
                             max_new_tokens=96)
    chrf, _ = score(replies, [reference for _, reference in tasks])
    corrections = simulated_correction_rate(replies, [reference for _, reference in tasks])
    if result is None:
        print(json.dumps({"epsilon": args.epsilon, "seed": args.seed, "epsilon_spent": None, "noise_multiplier": 0.0,
                          "chrf": chrf, "corrections": corrections, "train_seconds": 0.0, "train_loss": None,
                          "val_loss": None,
                          "peak_rss_mib": peak_mib, "exposure": {}, "extraction_hits": 0, "pii_hits": 0,
                          "common_overlaps": 0, "audit_seconds": 0.0, "shadow_seconds": None}))
        return
    folder = Path(args.work) / f"candidate-{args.epsilon}-{args.seed}"
    model.save_pretrained(folder)
    (folder / MANIFEST_NAME).write_text(json.dumps({"hyperparameters": {**config.model_dump(), "dp": dp}}))
    del model
    report = run_audit(base_path, data, settings=settings, candidate=folder,
                       options=AuditOptions(seed=args.seed, alternatives=args.alternatives, prompts=args.prompts,
                                            samples=args.samples))
    print(json.dumps({
        "epsilon": args.epsilon, "seed": args.seed, "epsilon_spent": dp["epsilon"] if dp else None,
        "noise_multiplier": dp["noise_multiplier"] if dp else 0.0, "chrf": chrf, "corrections": corrections,
        "train_seconds": train_seconds,
        "train_loss": result.train_loss, "val_loss": result.val_loss, "peak_rss_mib": peak_mib,
        "exposure": {str(k): v for k, v in report.exposure.items()},
        "extraction_hits": len(report.extraction.hits), "pii_hits": len(report.extraction.pii_hits),
        "common_overlaps": report.extraction.common_overlaps, "audit_seconds": report.seconds,
        "shadow_seconds": report.shadow.seconds if report.shadow else None,
    }))


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def table(rows: list[dict]) -> str:
    lines = ["| DP | epsilon spent | exposure never / 1x / 4x / 16x (bits) | extraction hits | personal values | "
             "held-out chrF | simulated corrections % | validation loss | train s | peak RSS MiB |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for epsilon in dict.fromkeys(row["epsilon"] for row in rows):
        mine = [row for row in rows if row["epsilon"] == epsilon]
        exposure = " / ".join(spread([row["exposure"][count] for row in mine if count in row["exposure"]])
                              for count in ("0", "1", "4", "16"))
        spent = [row["epsilon_spent"] for row in mine if row["epsilon_spent"] is not None]
        label = {"off": "off", "base": "base alone (no adapter)", "clip": "DP steps, noise 0"}.get(
            epsilon, f"on, ε={epsilon}")
        lines.append(f"| {label} | {spread(spent)} | {exposure} | "
                     f"{spread([row['extraction_hits'] for row in mine])} | "
                     f"{spread([row['pii_hits'] for row in mine])} "
                     f"| {spread([row['chrf'] for row in mine])} "
                     f"| {spread([100 * row['corrections'] for row in mine if 'corrections' in row])} "
                     f"| {spread([row['val_loss'] for row in mine if row['val_loss'] is not None])} "
                     f"| {spread([row['train_seconds'] for row in mine])} | "
                     f"{spread([row['peak_rss_mib'] for row in mine])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="Base model folder; default: build the tiny base.")
    parser.add_argument("--epsilons", nargs="+", default=["off", "1", "4", "8"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, help="Epochs for every run; default: the base's preset's.")
    parser.add_argument("--alternatives", type=int, default=127)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="HOUSESTYLE_CPU_THREADS of each run.")
    parser.add_argument("--work", type=Path, help="Folder for the base, export and candidates; default: a temp one.")
    parser.add_argument("--out", type=Path, help="Write the rows as JSON here.")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--epsilon", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        worker(args)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="memorisation-"))
    work.mkdir(parents=True, exist_ok=True)
    base, data = prepare(work, args.base)
    env = {**os.environ, "HOUSESTYLE_HOME": str(work / "home"), "HOUSESTYLE_CPU_THREADS": str(args.threads)}
    rows = []
    for seed in args.seeds:
        for epsilon in args.epsilons:
            command = [sys.executable, __file__, "--one", "--base", str(base), "--data", str(data), "--work", str(work),
                       "--epsilon", epsilon, "--seed", str(seed), "--alternatives", str(args.alternatives),
                       "--prompts", str(args.prompts), "--samples", str(args.samples)]
            if args.epochs:
                command += ["--epochs", str(args.epochs)]
            print(f"DP {epsilon}, seed {seed} ...", file=sys.stderr, flush=True)
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"error: DP {epsilon} seed {seed} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
