"""Knowledge grounding: retrieval latency per message and its share of a reply, and factual accuracy with and without
grounding on the held-out product questions, all in the same run.

1. Latency: `collector.knowledge.ground` (revision check + BM25 + prompt fit, what the prompt builder will call)
   for every customer message of the bundled sample, on the bundled knowledge base (38 passages) and on one
   `--scale` times larger (copies of the product sheet under other product names). Baselines, same run: the
   revision check alone (the floor of any per-message index check), and a greedy reply from `--base` without
   grounding (transformers on CPU, `--max-new-tokens`); grounding's full cost is retrieval plus the longer prompt,
   so the grounded reply is timed too.
2. Accuracy: each held-out question (collector/sample/knowledge_questions.jsonl, answers written from the sheet)
   is answered greedily by `--base` (optionally `--adapter`) once without and once with the passages in the system
   prompt; a reply is right when it contains one of the accepted answer strings. Retrieval recall@k (an accepted
   string is in the passages given) bounds what grounding can reach; the reference answers score 1.0 (the check).

What the accuracy means depends on the base: the tiny demo base (`housestyle base build`) is a 2-layer model
pre-trained on generic support text; it cannot read a passage back, so its accuracy measures nothing but the floor.
Point --base at a real instruction-tuned checkpoint (e.g. SmolLM2-360M-Instruct) for a figure that means something.

Run: .venv/bin/python bench/knowledge.py --base DIR [--adapter DIR] [--scale 300] [--max-new-tokens 64] [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def customer_messages() -> list[str]:
    from collector.sample import SAMPLE_PATH

    messages = []
    for line in SAMPLE_PATH.read_text(encoding="utf-8").splitlines():
        messages += [turn["content"] for turn in json.loads(line)["messages"] if turn["role"] == "user"]
    return messages


def questions() -> list[dict]:
    from collector.knowledge import QUESTIONS_PATH

    return [json.loads(line) for line in QUESTIONS_PATH.read_text(encoding="utf-8").splitlines() if line.strip()]


def correct(reply: str, accepted: list[str]) -> bool:
    folded = " ".join(reply.casefold().split())
    return any(" ".join(answer.casefold().split()) in folded for answer in accepted)


def scaled_sheet(copies: int, folder: Path) -> list[Path]:
    """`copies` product sheets, each with every product renamed (SuperWidget -> SuperWidget17): a bigger, harder base."""
    from collector.knowledge import PRODUCT_SHEET_PATH
    from collector.knowledge.loaders import load_document

    text = PRODUCT_SHEET_PATH.read_text(encoding="utf-8")
    products = load_document(PRODUCT_SHEET_PATH).products
    paths = []
    for copy in range(copies):
        renamed = text
        for product in products:
            renamed = renamed.replace(product, f"{product}{copy}")
        path = folder / f"sheet-{copy:04d}.md"
        path.write_text(renamed, encoding="utf-8")
        paths.append(path)
    return paths


def time_grounding(url: str, messages: list[str], settings) -> dict:
    from collector.knowledge import ground
    from collector.knowledge.retrieval import knowledge_index
    from collector.knowledge.store import current_revision
    from core import db

    with db.session_scope(url) as session:
        started = time.perf_counter()
        index = knowledge_index(session, settings)  # the first message after a change builds the index
        build_ms = (time.perf_counter() - started) * 1000
        ground_ms, revision_ms, found = [], [], 0
        for message in messages:
            started = time.perf_counter()
            current_revision(session)
            revision_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            grounding = ground(session, [("user", message)], settings=settings)
            ground_ms.append((time.perf_counter() - started) * 1000)
            found += bool(grounding.passages)
    return {
        "passages": len(index),
        "index_build_ms": round(build_ms, 1),
        "messages": len(messages),
        "grounded_share": round(found / len(messages), 3),
        "ground_p50_ms": round(percentile(ground_ms, 0.5), 3),
        "ground_p95_ms": round(percentile(ground_ms, 0.95), 3),
        "ground_mean_ms": round(statistics.fmean(ground_ms), 3),
        "revision_check_p50_ms": round(percentile(revision_ms, 0.5), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="base model folder (e.g. from `housestyle base build --out DIR`)")
    parser.add_argument("--adapter", help="a LoRA adapter folder on that base")
    parser.add_argument("--scale", type=int, default=300, help="product-sheet copies for the large knowledge base")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--reply-messages", type=int, default=24, help="customer messages timed for the reply baseline")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here too")
    args = parser.parse_args()

    from collector.knowledge import SAMPLE_DOCUMENTS, add_document, ground
    from core import db
    from core.prompts import build_messages
    from core.settings import Settings, get_settings
    from trainer.generate import greedy_replies, load_reply_model

    results: dict = {"cpu_count": os.cpu_count(), "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="housestyle-bench-knowledge-") as scratch:
        root = Path(scratch)
        os.environ["HOUSESTYLE_HOME"] = str(root / "home")
        os.environ.pop("HOUSESTYLE_DATABASE_URL", None)
        get_settings.cache_clear()
        settings = Settings()
        small, large = (db.open_store(f"sqlite:///{root / name}") for name in ("small.db", "large.db"))
        with db.session_scope(small) as session:
            for path in SAMPLE_DOCUMENTS:
                add_document(session, path, settings=settings)
        started = time.perf_counter()
        with db.session_scope(large) as session:
            for path in [*SAMPLE_DOCUMENTS, *scaled_sheet(args.scale, root)]:
                add_document(session, path, settings=settings)
        results["large_add_s"] = round(time.perf_counter() - started, 2)
        messages = customer_messages()
        from collector.knowledge.retrieval import tokenize

        tokenize(["import bm25s and PyStemmer before the clock starts"])
        results["retrieval_small"] = time_grounding(small, messages, settings)
        results["retrieval_large"] = time_grounding(large, messages, settings)

        model = load_reply_model(args.base, args.adapter, settings=settings)
        timed = messages[:: max(1, len(messages) // args.reply_messages)][: args.reply_messages]

        def prompts(texts: list[str], grounded: bool) -> tuple[list[list[dict]], list[list]]:
            built, used = [], []
            with db.session_scope(small) as session:
                for text in texts:
                    turns = [("user", text)]
                    passages = ground(session, turns, settings=settings).passages if grounded else []
                    built.append(build_messages(settings.system_prompt, turns, passages))  # as the service does
                    used.append(passages)
            return built, used

        greedy_replies(model, prompts(timed[:2], False)[0], max_new_tokens=4, batch_size=1)  # warm-up
        reply_ms: dict[str, list[float]] = {"plain": [], "grounded": []}
        for text in timed:  # alternate plain / grounded so machine drift hits both alike
            for kind in ("plain", "grounded"):
                started = time.perf_counter()
                built, _ = prompts([text], kind == "grounded")
                greedy_replies(model, built, max_new_tokens=args.max_new_tokens, batch_size=1)
                reply_ms[kind].append((time.perf_counter() - started) * 1000)
        reply = {kind: round(statistics.median(values), 1) for kind, values in reply_ms.items()}
        results["reply_p50_ms"] = reply
        results["retrieval_share_of_reply"] = round(results["retrieval_small"]["ground_p50_ms"] / reply["plain"], 5)
        results["grounded_reply_vs_plain"] = round(reply["grounded"] / reply["plain"], 3)

        held_out = questions()
        texts = [q["question"] for q in held_out]
        plain_prompts, _ = prompts(texts, False)
        grounded_prompts, used = prompts(texts, True)
        plain = greedy_replies(model, plain_prompts, max_new_tokens=args.max_new_tokens, batch_size=8)
        grounded = greedy_replies(model, grounded_prompts, max_new_tokens=args.max_new_tokens, batch_size=8)
        recall = [
            correct("\n".join(p.text for p in passages), q["accept"])
            for passages, q in zip(used, held_out, strict=True)
        ]
        results["accuracy"] = {
            "questions": len(held_out),
            "without_grounding": round(
                sum(correct(r, q["accept"]) for r, q in zip(plain, held_out, strict=True)) / len(held_out), 3
            ),
            "with_grounding": round(
                sum(correct(r, q["accept"]) for r, q in zip(grounded, held_out, strict=True)) / len(held_out), 3
            ),
            "retrieval_recall_at_k": round(sum(recall) / len(held_out), 3),
            "reference_answers": round(sum(correct(q["answer"], q["accept"]) for q in held_out) / len(held_out), 3),
            "k": settings.knowledge_top_k,
        }
        results["examples"] = [
            {"question": q["question"], "plain": p, "grounded": g}
            for q, p, g in list(zip(held_out, plain, grounded, strict=True))[:3]
        ]
    results["base"], results["adapter"] = str(args.base), args.adapter
    print_table(results)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")


def print_table(results: dict) -> None:
    small, large, accuracy = results["retrieval_small"], results["retrieval_large"], results["accuracy"]
    reply = results["reply_p50_ms"]
    print(
        f"machine: {results['cpu_count']} cores, load average {', '.join(f'{x:.2f}' for x in results['load_average'])}"
    )
    print(f"base: {results['base']}  adapter: {results['adapter']}")
    for name, figures in (("bundled", small), (f"large (+{large['passages'] - small['passages']} passages)", large)):
        print(
            f"retrieval, {name} knowledge base ({figures['passages']} passages, index built in "
            f"{figures['index_build_ms']} ms): p50 {figures['ground_p50_ms']} ms, p95 {figures['ground_p95_ms']} ms "
            f"per message over {figures['messages']} messages ({figures['grounded_share']:.0%} got passages); "
            f"revision check alone p50 {figures['revision_check_p50_ms']} ms"
        )
    print(
        f"reply p50 (greedy, no grounding): {reply['plain']} ms; with grounding: {reply['grounded']} ms "
        f"({results['grounded_reply_vs_plain']}x)"
    )
    print(f"retrieval share of a reply: {results['retrieval_share_of_reply']:.3%}")
    print(
        f"accuracy on {accuracy['questions']} held-out product questions: without grounding "
        f"{accuracy['without_grounding']:.0%}, with grounding {accuracy['with_grounding']:.0%}; retrieval recall@"
        f"{accuracy['k']} {accuracy['retrieval_recall_at_k']:.0%}; reference answers {accuracy['reference_answers']:.0%}"
    )
    for example in results["examples"]:
        print(
            f"  Q: {example['question']}\n    plain:    {example['plain'][:160]}\n    grounded: {example['grounded'][:160]}"
        )


if __name__ == "__main__":
    main()
