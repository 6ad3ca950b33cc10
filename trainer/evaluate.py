"""Held-out evaluation: the base, the base with random few-shot examples, the base with answer memory, the adapter
and the adapter with answer memory, against the agents' own replies.

For every assistant turn of the export's test split, each system answers greedily from the conversation so far;
answers are scored with chrF (sacrebleu) and ROUGE-L (rouge-score) against what the agent actually sent, and with
the **simulated correction rate**: the share of replies an agent would have changed (`core.changes.same_text`, the
one definition of "the draft was changed"), the figure that says whether a reply said the right thing and not only
sounded right. The token-weighted loss of the agents' replies and simple style statistics complete it.

Answer memory (`collector.memory`): an export made with HOUSESTYLE_MEMORY_EXAMPLES above 0 carries each reply's
examples in its system prompt, recalled from the train split only (`collector.export.recalled`); the systems
"with memory" use them as exported (as the service serves them) and the others have them cut
(`core.prompts.without_examples`). An export made without memory gets examples recalled here from its own train
split the same way (same index, query, k and budget; k is 1 when memory is off).
"""

from __future__ import annotations

import json
import random
import re
import statistics
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from collector.memory import exchanges_of_chats, recall_in
from collector.memory.index import MemoryIndex
from collector.sample import GOLDEN_PATH
from core.changes import same_text
from core.errors import InputError
from core.models import DEFAULT_BRAND
from core.prompts import ASSISTANT, build_messages, with_system_prompt, without_examples
from core.settings import Settings
from trainer.chat_format import Messages
from trainer.data import IGNORE, Example, encode_example, load_export
from trainer.generate import LoadedModels, ReplyGenerator, TransformersReplies
from trainer.model_loading import load_tokenizer, resolve_base

FEW_SHOT_EXAMPLES = 3
EVAL_MEMORY_EXAMPLES = 1  # examples recalled per reply for the "with memory" systems when HOUSESTYLE_MEMORY_EXAMPLES=0
GREETING = re.compile(r"^\s*(hi|hello|hey|dear|good (morning|afternoon|evening)|thanks? (you )?for|i'?m sorry)", re.I)


class StyleStats(BaseModel):
    mean_words: float
    greeting_rate: float  # share of replies opening with a greeting or an apology
    sign_off_rate: float  # share of replies ending with a sign-off (regards, the <Company> Team)


class SystemScores(BaseModel):
    chrf: float
    rougeL: float
    loss: float
    correction_rate: float = 0.0  # share of replies an agent would change (`simulated_correction_rate`)
    style: StyleStats
    samples: list[dict[str, str]]  # a few prompts with the reply and the reference, for people to read


class VersionScores(BaseModel):
    """How one version (an adapter, or the base model alone) does on the held-out split and the golden set."""

    version: str
    chrf: float
    rougeL: float
    loss: float
    golden_chrf: float
    correction_rate: float = 0.0  # held-out, simulated (`simulated_correction_rate`); older runs recorded none


class EvalReport(BaseModel):
    base_model: str
    adapter: str | None
    data: str
    test_replies: int
    reference_style: StyleStats
    base: SystemScores
    few_shot: SystemScores
    adapter_scores: SystemScores | None = None
    base_memory: SystemScores | None = None
    adapter_memory: SystemScores | None = None
    memory_source: str = ""  # "export" (the export's own examples) or "train split" (recalled by the evaluation)

    def to_json(self) -> dict:
        """Top-level keys `base`, `few_shot`, `base_memory`, `adapter`, `adapter_memory`, each with chrf, rougeL,
        loss, correction_rate and style (None for a system not run)."""
        data = self.model_dump(mode="json", exclude={"adapter_scores"})
        data["adapter_path"] = data.pop("adapter")
        data["adapter"] = self.adapter_scores.model_dump(mode="json") if self.adapter_scores else None
        return data

    def systems(self) -> list[tuple[str, SystemScores]]:
        """(name, scores) of every system that ran, in the report's order."""
        rows = [("base", self.base), ("few-shot", self.few_shot), ("base + memory", self.base_memory),
                ("adapter", self.adapter_scores), ("adapter + memory", self.adapter_memory)]
        return [(name, scores) for name, scores in rows if scores is not None]

    def markdown(self) -> str:
        lines = [
            f"Evaluation on {self.test_replies} held-out replies ({self.data}); memory examples from the "
            f"{self.memory_source or 'train split'}",
            "",
            "| system | corrections | chrF | ROUGE-L | loss | words | greeting | sign-off |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, scores in self.systems():
            lines.append(f"| {name} | {scores.correction_rate:.0%} | {scores.chrf:.1f} | {scores.rougeL:.1f} | "
                         f"{scores.loss:.3f} | {scores.style.mean_words:.1f} | {scores.style.greeting_rate:.0%} | "
                         f"{scores.style.sign_off_rate:.0%} |")
        ref = self.reference_style
        lines.append(f"| agents (reference) | | | | | {ref.mean_words:.1f} | {ref.greeting_rate:.0%} | "
                     f"{ref.sign_off_rate:.0%} |")
        return "\n".join(lines) + "\n"


def style_stats(replies: list[str], company_name: str) -> StyleStats:
    company = re.escape(company_name)
    sign_off = re.compile(rf"(regards|sincerely|best wishes|cheers|the {company} team)\W*$", re.I)
    count = max(len(replies), 1)
    return StyleStats(
        mean_words=statistics.fmean(len(r.split()) for r in replies) if replies else 0.0,
        greeting_rate=sum(bool(GREETING.search(r)) for r in replies) / count,
        sign_off_rate=sum(bool(sign_off.search(r)) for r in replies) / count,
    )


def reply_tasks(conversations: list[Messages], system_prompt: str) -> list[tuple[Messages, str]]:
    """(conversation so far, the agent's reply) for every assistant turn."""
    tasks = []
    for messages in conversations:
        messages = with_system_prompt(messages, system_prompt)
        for index, message in enumerate(messages):
            if message["role"] == ASSISTANT:
                tasks.append((messages[:index], message["content"]))
    return tasks


def golden_tasks(path: Path = GOLDEN_PATH, *, system_prompt: str) -> list[tuple[Messages, str]]:
    """The fixed golden set: (prompt with system prompt, expected reply) pairs a new version must not regress on."""
    tasks = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            messages = json.loads(line)["messages"]
            tasks.append((with_system_prompt(messages[:-1], system_prompt), messages[-1]["content"]))
    return tasks


def few_shot_prefix(train: list[Messages], k: int = FEW_SHOT_EXAMPLES, seed: int = 0) -> Messages:
    """The first exchange of k training conversations, as earlier turns of the same chat."""
    chosen = random.Random(seed).sample(train, min(k, len(train)))
    shots: Messages = []
    for messages in chosen:
        turns = [m for m in messages if m["role"] != "system"]
        shots += turns[:2]
    return shots


def with_shots(prompt: Messages, shots: Messages) -> Messages:
    """The prompt with the shots as earlier turns, right after its system prompt."""
    return build_messages(prompt[0]["content"], [(m["role"], m["content"]) for m in [*shots, *prompt[1:]]])


def simulated_correction_rate(replies: list[str], references: list[str]) -> float:
    """Share of replies an agent would have changed before sending: any that is not the agent's own reply
    (`core.changes.same_text`, as the demo's agents and the review queue decide). 0 for no replies."""
    changed = sum(not same_text(reply, reference) for reply, reference in zip(replies, references, strict=True))
    return changed / len(replies) if replies else 0.0


def has_examples(tasks: list[tuple[Messages, str]]) -> bool:
    """True when the prompts carry answer memory's examples (an export made with HOUSESTYLE_MEMORY_EXAMPLES>0)."""
    return any(without_examples(prompt) is not prompt for prompt, _ in tasks)


def with_memory(tasks: list[tuple[Messages, str]], train: list[Messages], settings: Settings
                ) -> list[tuple[Messages, str]]:
    """The tasks with the examples answer memory recalls for each from the train split (`collector.memory`), added
    to each prompt's system prompt as the service adds them."""
    if settings.memory_examples <= 0:
        settings = settings.model_copy(update={"memory_examples": EVAL_MEMORY_EXAMPLES})
    index = MemoryIndex.build(exchanges_of_chats(train))
    shown = []
    for prompt, reference in tasks:
        turns = [(m["role"], m["content"]) for m in prompt[1:]]
        found = recall_in(index, turns, settings=settings)
        shown.append((build_messages(prompt[0]["content"], turns, (), found.examples), reference))
    return shown


def task_conversations(tasks: list[tuple[Messages, str]]) -> list[Messages]:
    """Each task as a conversation ending in the agent's reply (what the loss is taken on with recalled examples,
    whose prompt differs per reply)."""
    return [[*prompt, {"role": ASSISTANT, "content": reference}] for prompt, reference in tasks]


def score(replies: list[str], references: list[str]) -> tuple[float, float]:
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import CHRF

    chrf = CHRF().corpus_score(replies, [references]).score
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rouge = statistics.fmean(scorer.score(ref, hyp)["rougeL"].fmeasure for hyp, ref in zip(replies, references))
    return chrf, 100 * rouge


def held_out_loss(generator: ReplyGenerator, tokenizer: Any, adapter: Path | None, conversations: list[Messages],
                  shots: Messages, *, system_prompt: str, max_length: int) -> float:
    """Token-weighted loss of the agents' replies; with shots, the shots are context only (no loss on them)."""
    examples: list[Example] = []
    for messages in conversations:
        messages = with_system_prompt(messages, system_prompt)
        if not shots:
            examples.append(encode_example(tokenizer, messages, max_length))
            continue
        full = encode_example(tokenizer, with_shots(messages, shots), max_length)
        context = encode_example(tokenizer, with_shots(messages[:1], shots), max_length)
        cut = len(context.input_ids) - 1  # the last context token predicts the first conversation token
        examples.append(Example(full.input_ids, [IGNORE] * cut + full.targets[cut:]))
    total, count = generator.summed_loss([e for e in examples if e.target_count], adapter=adapter)
    return total / max(count, 1)


def evaluate_system(
    generator: ReplyGenerator, tokenizer: Any, adapter: Path | None, tasks: list[tuple[Messages, str]],
    conversations: list[Messages], shots: Messages, *, settings: Settings, max_new_tokens: int, max_length: int,
) -> SystemScores:
    """One system's replies scored against the agents', and its loss on their replies; both from `generator`."""
    prompts = [with_shots(prompt, shots) if shots else prompt for prompt, _ in tasks]
    references = [reference for _, reference in tasks]
    replies = generator.replies(prompts, adapter=adapter, max_new_tokens=max_new_tokens)
    chrf, rouge = score(replies, references)
    samples = [{"customer": p[-1]["content"], "reply": r, "reference": ref}
               for (p, ref), r in list(zip(tasks, replies, strict=True))[:5]]
    loss = held_out_loss(generator, tokenizer, adapter, conversations, shots, system_prompt=settings.system_prompt,
                         max_length=max_length)
    return SystemScores(chrf=chrf, rougeL=rouge, loss=loss,
                        correction_rate=simulated_correction_rate(replies, references), style=style_stats(replies, settings.company_name), samples=samples)


def held_out_split(data: str | Path, *, settings: Settings, limit: int | None = None
                   ) -> tuple[dict[str, list[Messages]], list[Messages], list[tuple[Messages, str]]]:
    """The export's splits, the held-out conversations (test, else validation) and their first `limit` replies."""
    splits = load_export(Path(data))
    if any(not isinstance(example, list) for examples in splits.values() for example in examples):
        raise InputError(f"the export in {data} is prompt-completion text, which `housestyle eval` cannot replay "
                         "turn by turn; export with `housestyle export --format chat`")
    test = splits.get("test") or splits.get("validation") or []
    tasks = reply_tasks(test, settings.system_prompt)
    tasks = tasks[:limit] if limit else tasks
    if not tasks:
        raise InputError(f"the export in {data} has no test replies; export more conversations or a larger test share")
    return splits, test, tasks


def evaluate(
    base: str | Path, data: str | Path, *, settings: Settings, adapter: str | Path | None = None,
    limit: int | None = None, max_new_tokens: int = 96, max_length: int = 1024,
    generator: ReplyGenerator | None = None,
) -> EvalReport:
    """Score the five systems on the export's test split: base, few-shot base, base with memory and (when given)
    the adapter without and with memory.

    Replies come from `generator` (default: transformers in this process; plugin.evaluation passes vLLM's);
    losses always from the transformers model, one model in memory at a time.
    """
    splits, test, tasks = held_out_split(data, settings=settings, limit=limit)
    shots = few_shot_prefix(splits["train"])
    tokenizer = load_tokenizer(resolve_base(base))
    generator = generator or TransformersReplies(LoadedModels(base, settings))
    adapter = Path(adapter) if adapter else None
    common = dict(settings=settings, max_new_tokens=max_new_tokens, max_length=max_length)
    exported = has_examples(tasks)
    plain_tasks = [(without_examples(prompt), reference) for prompt, reference in tasks]
    plain_test = [without_examples(with_system_prompt(messages, settings.system_prompt)) for messages in test]
    if exported:
        memory_tasks, memory_test = tasks, test
    else:
        memory_tasks = with_memory(plain_tasks, splits.get("train", []), settings)
        memory_test = task_conversations(memory_tasks)
    base_scores = evaluate_system(generator, tokenizer, None, plain_tasks, plain_test, [], **common)
    few_shot_scores = evaluate_system(generator, tokenizer, None, plain_tasks, plain_test, shots, **common)
    base_memory = evaluate_system(generator, tokenizer, None, memory_tasks, memory_test, [], **common)
    adapter_scores = adapter_memory = None
    if adapter is not None:
        adapter_scores = evaluate_system(generator, tokenizer, adapter, plain_tasks, plain_test, [], **common)
        adapter_memory = evaluate_system(generator, tokenizer, adapter, memory_tasks, memory_test, [], **common)
    return EvalReport(
        base_model=str(base), adapter=str(adapter) if adapter else None, data=str(data), test_replies=len(tasks),
        reference_style=style_stats([reference for _, reference in tasks], settings.company_name),
        base=base_scores, few_shot=few_shot_scores, adapter_scores=adapter_scores, base_memory=base_memory,
        adapter_memory=adapter_memory, memory_source="export" if exported else "train split",
    )


def score_version(
    base: str | Path, adapter: str | Path | None, label: str, data: str | Path, *, settings: Settings,
    limit: int | None = None, golden: Path | None = None, max_new_tokens: int = 96, max_length: int = 1024,
    generator: ReplyGenerator | None = None,
) -> VersionScores:
    """One version (`adapter`, or the base alone when None) on the export's held-out split and the golden set
    (`golden`, else the brand's HOUSESTYLE_GOLDEN_SET; a brand without one scores 0 there, so that rule is moot).

    The refresh's gate compares two of these; it is `evaluate`'s code path and defaults, one system at a time.
    """
    _, test, tasks = held_out_split(data, settings=settings, limit=limit)
    generator = generator or TransformersReplies(LoadedModels(base, settings))
    adapter = Path(adapter) if adapter else None
    held_out = evaluate_system(generator, load_tokenizer(resolve_base(base)), adapter, tasks, test, [],
                               settings=settings, max_new_tokens=max_new_tokens, max_length=max_length)
    on_golden = golden_chrf(generator, adapter, settings=settings, golden=golden, max_new_tokens=max_new_tokens)
    return VersionScores(version=label, chrf=held_out.chrf, rougeL=held_out.rougeL, loss=held_out.loss,
                         golden_chrf=0.0 if on_golden is None else on_golden,
                         correction_rate=held_out.correction_rate)


def golden_set_of(settings: Settings) -> Path | None:
    """The brand's golden set: HOUSESTYLE_GOLDEN_SET, else the bundled one for the default brand, else none."""
    if settings.golden_set:
        return Path(settings.golden_set).expanduser()
    return GOLDEN_PATH if settings.brand == DEFAULT_BRAND else None


def golden_chrf(generator: ReplyGenerator, adapter: Path | None, *, settings: Settings, golden: Path | None = None,
                max_new_tokens: int = 96) -> float | None:
    """chrF of one version's replies on the golden set (`golden`, else the brand's); None when it has none."""
    golden = golden or golden_set_of(settings)
    if golden is None:
        return None
    golden_set = golden_tasks(golden, system_prompt=settings.system_prompt)
    replies = generator.replies([prompt for prompt, _ in golden_set], adapter=adapter, max_new_tokens=max_new_tokens)
    return score(replies, [reference for _, reference in golden_set])[0]


def write_report(report: EvalReport, out: Path) -> Path:
    """report.json at `out`, report.md beside it; both written whole (temp file + rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, text in ((out, json.dumps(report.to_json(), indent=2) + "\n"), (out.with_suffix(".md"), report.markdown())):
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(text)
        temporary.replace(path)
    return out
