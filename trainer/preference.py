"""Preference training on top of the SFT adapter: DPO or KTO with TRL on a `housestyle export --format dpo|kto`.

The recipe, top to bottom: read the export, load the base with the SFT adapter as the trainable policy (or a
fresh LoRA when there is none), let TRL's `DPOTrainer` / `KTOTrainer` fit it against a frozen copy of that same
adapter (TRL adds it as the "ref" adapter), drop the copy, and publish the adapter like `trainer.train` does
(hashed, registered as a candidate, renamed into place in one transaction). The result is one LoRA of the SFT
adapter's rank and modules, so vLLM serves it like any other version. fp32 on CPU, bf16 on GPUs.

`reply_logprob` and `preference_margins` score a reply under a model (the summed log-probability of its tokens
after the prompt): the held-out margin `log p(chosen) - log p(rejected)` and preference accuracy read from it.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field, model_validator

from collector.split import SPLITS
from core.errors import ConflictError, InputError
from core.models import RunStatus
from core.runs import RunLog
from core.settings import Settings
from trainer.chat_format import Messages, encode_conversation
from trainer.distributed import current_world
from trainer.fitting import FitResult
from trainer.model_loading import load_model, load_tokenizer, load_with_adapter, resolve_base
from trainer.train import TrainConfig, TrainedAdapter, _publish, add_lora, check_rank

PreferenceMethod = Literal["dpo", "kto"]
PREFERENCE_METHODS: tuple[PreferenceMethod, ...] = ("dpo", "kto")


class PreferenceConfig(BaseModel):
    """Hyper-parameters of one preference run, recorded in the adapter's manifest.

    beta       strength of the pull towards the reference (the SFT adapter): lower lets the policy move further
    lr         peak learning rate (DPO on top of SFT wants a small one; the SFT presets' lr would undo the SFT)
    epochs     passes over the training pairs / examples
    batch_size pairs (DPO) or examples (KTO; at least 2: its KL term pairs each prompt with another's completion)
    max_length tokens of prompt + reply; longer rows keep their start
    rank/alpha the LoRA made when there is no SFT adapter to start from
    """

    method: PreferenceMethod = "dpo"
    beta: float = Field(0.1, gt=0)
    lr: float = Field(5e-5, gt=0)
    epochs: int = Field(1, gt=0)
    batch_size: int = Field(2, gt=0)
    max_length: int = Field(512, gt=8)
    rank: int = Field(16, gt=0)
    alpha: float = Field(32, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _kto_pairs_within_a_batch(self) -> PreferenceConfig:
        if self.method == "kto" and self.batch_size < 2:
            raise ValueError("KTO needs --batch-size 2 or more (its KL estimate pairs each prompt with another's reply)")
        return self


def load_preference_export(folder: str | Path, method: PreferenceMethod) -> dict[str, list[dict[str, Any]]]:
    """The rows of a `housestyle export --format METHOD` folder, split by split; InputError if it is another kind."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"{folder} holds no export (no manifest.json); run `housestyle export --format {method} "
                         f"--out {folder}`")
    fmt = json.loads(manifest_path.read_text(encoding="utf-8")).get("format")
    if fmt != method:
        raise InputError(f"--method {method} needs an export made with --format {method}; {folder} is a {fmt} "
                         f"export (run `housestyle export --format {method} --out DIR`)")
    splits: dict[str, list[dict[str, Any]]] = {}
    for split in SPLITS:
        path = folder / f"{split}.jsonl"
        if path.is_file():
            splits[split] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not splits.get("train"):
        raise InputError(f"the {method} export in {folder} has no training rows; agents need to edit or reject "
                         "more drafts first (or export with a larger split)")
    return splits


def reply_logprob(model: torch.nn.Module, tokenizer: Any, prompt: Messages, reply: str, max_length: int = 1024) -> float:
    """Summed log-probability of `reply`'s tokens (and its end of turn) after `prompt`, under the chat template."""
    input_ids, mask = encode_conversation(tokenizer, [*prompt, {"role": "assistant", "content": reply}])
    last = len(mask) - 1
    while last >= 0 and not mask[last]:
        last -= 1
    first = last
    while first > 0 and mask[first - 1]:
        first -= 1
    if last < 1:
        return 0.0
    keep = input_ids[: last + 1][-max_length:]
    offset = last + 1 - len(keep)
    ids = torch.tensor([keep], device=next(model.parameters()).device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    logprobs = torch.log_softmax(logits[:-1], dim=-1)
    targets = ids[0, 1:]
    positions = range(max(first, offset + 1) - offset - 1, last - offset)  # logits at t predict token t + 1
    return float(sum(logprobs[t, targets[t]] for t in positions))


def preference_margins(model: torch.nn.Module, tokenizer: Any, pairs: list[dict[str, Any]]) -> list[float]:
    """`log p(chosen) - log p(rejected)` for each DPO row (prompt, chosen, rejected) under `model`."""
    model.eval()
    return [reply_logprob(model, tokenizer, row["prompt"], row["chosen"][0]["content"])
            - reply_logprob(model, tokenizer, row["prompt"], row["rejected"][0]["content"]) for row in pairs]


def _trl_rows(rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(rows)


def _trainer(method: PreferenceMethod, model: Any, tokenizer: Any, train: list[dict], validation: list[dict],
             config: PreferenceConfig, on_gpu: bool, scratch: Path) -> Any:
    common = dict(
        output_dir=str(scratch), per_device_train_batch_size=config.batch_size, num_train_epochs=config.epochs,
        learning_rate=config.lr, beta=config.beta, max_length=config.max_length, seed=config.seed,
        report_to=[], save_strategy="no", logging_steps=1, lr_scheduler_type="constant", warmup_steps=0,
        use_cpu=not on_gpu, bf16=on_gpu, dataloader_num_workers=0, disable_tqdm=True,
        eval_strategy="epoch" if validation else "no", per_device_eval_batch_size=config.batch_size,
    )
    if method == "dpo":
        from trl import DPOConfig, DPOTrainer

        return DPOTrainer(model=model, args=DPOConfig(**common), train_dataset=_trl_rows(train),
                          eval_dataset=_trl_rows(validation) if validation else None, processing_class=tokenizer)
    from trl import KTOConfig, KTOTrainer

    return KTOTrainer(model=model, args=KTOConfig(**common), train_dataset=_trl_rows(train),
                      eval_dataset=_trl_rows(validation) if validation else None, processing_class=tokenizer)


def policy_model(base_path: Path, sft_adapter: Path | None, config: PreferenceConfig, device: torch.device,
                 settings: Settings) -> Any:
    """The trainable policy: the base with the SFT adapter's LoRA unfrozen, else with a fresh LoRA."""
    if sft_adapter is not None:
        from peft import PeftModel

        model = load_with_adapter(base_path, sft_adapter, device)  # checks the adapter belongs to this base
        base = model.unload() if isinstance(model, PeftModel) else model
        return PeftModel.from_pretrained(base, sft_adapter, is_trainable=True).to(device)
    model = load_model(base_path, device)
    check_rank(model, config.rank, settings)
    lora = TrainConfig(rank=config.rank, alpha=config.alpha, dropout=0.0, lr=config.lr, epochs=config.epochs,
                       batch_size=config.batch_size, max_length=config.max_length)
    return add_lora(model, lora, checkpointing=False)


def train_preference(
    base: str | Path,
    data: str | Path,
    out: str | Path | None = None,
    config: PreferenceConfig | None = None,
    *,
    sft_adapter: str | Path | None = None,
    settings: Settings,
    database_url: str | None = None,
) -> TrainedAdapter:
    """DPO or KTO (`config.method`) on top of `sft_adapter` (None: from the base) and register the candidate.

    `out` defaults to HOME/adapters/<version>. Single process only (no torchrun).
    """
    config = config or PreferenceConfig()
    base_path, data = resolve_base(base), Path(data)
    splits = load_preference_export(data, config.method)
    world = current_world(settings)
    if world.size > 1:
        raise InputError("preference training runs in one process; start it without torchrun")
    target = Path(out).expanduser() if out else None
    if target is not None and target.exists():
        raise ConflictError(f"--out {target} already exists; adapters are never overwritten, choose a new folder")
    url = database_url or settings.resolved_database_url
    params = {**config.model_dump(), "base": str(base), "data": str(data),
              "sft_adapter": str(sft_adapter) if sft_adapter else None}
    run = RunLog(url, kind="train", step="train", params=params)
    try:
        if not world.uses_cuda:
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.manual_seed(config.seed)
        tokenizer = load_tokenizer(base_path)
        model = policy_model(base_path, Path(sft_adapter) if sft_adapter else None, config, world.device, settings)
        with tempfile.TemporaryDirectory(prefix=".preference-") as scratch:
            trainer = _trainer(config.method, model, tokenizer, splits["train"], splits.get("validation", []),
                               config, world.uses_cuda, Path(scratch))
            from transformers import PrinterCallback

            trainer.remove_callback(PrinterCallback)  # the metrics go to the manifest, not to stdout line by line
            started = time.perf_counter()
            output = trainer.train()
            seconds = time.perf_counter() - started
            val_loss = trainer.evaluate()["eval_loss"] if splits.get("validation") else None
        model = trainer.model
        if "ref" in model.peft_config:
            model.delete_adapter("ref")
        model.set_adapter("default")
        history = [{k: float(v) for k, v in entry.items() if isinstance(v, int | float)}
                   for entry in trainer.state.log_history]
        result = FitResult(train_loss=float(output.training_loss), val_loss=val_loss, best_epoch=config.epochs,
                           epochs_run=config.epochs, tokens=int(max([h.get("num_tokens", 0) for h in history] or [0])),
                           seconds=seconds, history=history)
        adapter_config = model.peft_config["default"]
        recorded = TrainConfig(preset="default", rank=adapter_config.r, alpha=adapter_config.lora_alpha,
                               dropout=adapter_config.lora_dropout, lr=config.lr, epochs=config.epochs,
                               batch_size=config.batch_size, max_length=config.max_length, seed=config.seed,
                               warmup_steps=0)  # TRL runs a constant lr with no warm-up (see _trainer)
        extra = {"method": config.method, "beta": config.beta, "sft_adapter": str(sft_adapter) if sft_adapter else None}
        path, version, manifest = _publish(model, result, recorded, base=str(base), base_path=base_path, data=data,
                                           target=target, run=run, url=url, settings=settings, world=world,
                                           extra_hyperparameters=extra)
        return TrainedAdapter(path=path, version=version, manifest=manifest)
    except BaseException as exc:
        run.finish(RunStatus.FAILED, error=str(exc) or type(exc).__name__)
        raise
