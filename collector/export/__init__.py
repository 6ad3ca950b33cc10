"""Export reviewed conversations as training data: redacted, de-duplicated, split by conversation, with a manifest.

The folder written (`--out DIR`) is the contract the trainer reads:

    DIR/
      manifest.json            ExportManifest: counts per split, what was dropped and why, redactions by type,
                               dedup counts, the options used, schema_version, created_at, content_sha256
      train.jsonl              format chat / prompt-completion: one JSON record per line
      validation.jsonl
      test.jsonl
      hf/                      format hf instead of the three .jsonl files: a `datasets.DatasetDict`
                               (train / validation / test) saved with `save_to_disk`; load with
                               `datasets.load_from_disk(DIR / "hf")`

Records:
- chat: `{"messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", ...},
  {"role": "assistant", ...}, ...]}`, built by `core.prompts` (the same builder the live service uses): the
  company system prompt first, then strictly alternating user/assistant turns, ending with an assistant turn
  (checked with `collector.formats.ChatRecord`). hf rows have the same `messages` column.
- prompt-completion: one line per reply, `{"prompt": ..., "completion": ...}`, both text. The prompt is the served
  prompt: the same `core.prompts` messages (that reply's passages included) rendered with the chat template of the
  base model the service serves (`core.chat_template`; HOUSESTYLE_BASE_MODEL, else HOME/models/base), generation
  prompt included, so it tokenises to what vLLM is sent; the completion is the reply and the template's end-of-turn
  marker (what `housestyle train` learns of a chat record's reply).

What goes in (`collector.export.exchanges`): only reviewed data, the agents' final texts, never a draft's own text.

How (`collector.export.pipeline`): conversations stream from the store by keyset pages (`reading`), are redacted,
fingerprinted and rendered (`workers`, in worker processes for large exports) into a spool file; after the pass the
duplicate plan is made, and a second pass over the spool writes the splits. Everything is written into a temporary
folder beside DIR that replaces DIR only when the export succeeded (`staging`).
"""

from collector.export.manifest import DedupCounts, ExportManifest
from collector.export.options import EXPORT_FORMATS, ExportFormat, ExportOptions, export_options
from collector.export.pipeline import export_dataset

__all__ = ["EXPORT_FORMATS", "DedupCounts", "ExportFormat", "ExportManifest", "ExportOptions", "export_dataset",
           "export_options"]
