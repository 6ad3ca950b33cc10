"""The refresh's second candidate: SFT+DPO (or KTO) trained on what agents changed, and the choice between methods.

When the reviews hold at least HOUSESTYLE_PREFERENCE_MIN_PAIRS preference pairs in the training split, the refresh
exports them (`housestyle export --format dpo`, and kto when that is the method), trains the preference candidate
on top of the SFT candidate, scores both on the same held-out pairs (edit distance to what agents finally sent,
preference accuracy; `trainer.preference_eval`) and `plugin.loop.gate.choose_method` picks the one that goes on to
the gate against the live version.
"""

from __future__ import annotations

from pathlib import Path

from collector.export import ExportOptions, export_dataset
from core.runs import RunLog
from core.settings import Settings
from plugin.evaluation import reply_engine
from plugin.loop.gate import MethodCandidate, MethodChoice, choose_method
from trainer.evaluate import golden_chrf
from trainer.generate import LoadedModels, TransformersReplies
from trainer.preference import PreferenceConfig, train_preference
from trainer.preference_eval import score_preference
from trainer.train import TrainedAdapter


def method_candidates(
    settings: Settings, base: str, sft: TrainedAdapter, data: Path, run: RunLog, *, brand_id: int,
    vllm: tuple[str, str | None] | None = None,
) -> tuple[MethodChoice, Path] | None:
    """(the choice, the winner's adapter folder), or None when there are too few pairs for a preference candidate.

    `data` is the refresh's chat export folder; the preference exports go beside it (`-dpo`, `-kto`), from the same
    brand's reviews only."""
    pairs = data.with_name(f"{data.name}-dpo")
    manifest = export_dataset(ExportOptions(format="dpo", out=pairs, brand_id=brand_id), settings=settings,
                              progress=False)
    method = settings.preference_method
    if manifest.records["train"] < settings.preference_min_pairs:
        run.step("train", f"{manifest.records['train']} preference pairs in the training split, fewer than "
                          f"HOUSESTYLE_PREFERENCE_MIN_PAIRS={settings.preference_min_pairs}: SFT only", 1.0)
        return None
    if not (manifest.records["test"] or manifest.records["validation"]):
        run.step("train", "no held-out preference pairs to compare methods on: SFT only", 1.0)
        return None
    examples = pairs
    if method == "kto":
        examples = data.with_name(f"{data.name}-kto")
        export_dataset(ExportOptions(format="kto", out=examples, brand_id=brand_id), settings=settings,
                       progress=False)
    run.step("train", f"{method} on top of {sft.version} ({manifest.records['train']} pairs)")
    preference = train_preference(base, examples, None, PreferenceConfig(method=method), sft_adapter=sft.path,
                                  settings=settings, database_url=settings.resolved_database_url)
    run.step("train", f"{method} candidate {preference.version} at {preference.path}", 1.0)
    folders = {sft.version: sft.path, preference.version: preference.path}
    url, api_key = vllm if vllm else (None, None)
    models = LoadedModels(base, settings)
    with reply_engine(settings, base, settings.eval_engine, url=url, api_key=api_key) as served:
        generator = served or TransformersReplies(models)  # the transformers engine: this process, models loaded once
        scored = [MethodCandidate(method=name, version=version, preference=score_preference(
                      base, folders[version], version, name, pairs, settings=settings,
                      limit=settings.refresh_eval_limit, generator=generator, models=models),
                      golden_chrf=golden_chrf(generator, folders[version], settings=settings))
                  for name, version in (("sft", sft.version), (method, preference.version))]
    choice = choose_method(scored, golden_tolerance=settings.gate_golden_tolerance)
    for candidate in scored:
        run.step("evaluate", candidate.preference.line(), 0.25)
    run.step("evaluate", "method: " + choice.reason, 0.3)
    return choice, folders[choice.winner.version]
