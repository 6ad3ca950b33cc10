"""Personal data in support conversations: find it (Presidio + spaCy + HouseStyle's recognizers), replace it with
typed placeholders consistent within a conversation, and keep placeholders out of replies customers see.

    redactor = ConversationRedactor.from_settings(settings)           # once per process: loads spaCy
    done = redactor.redact_conversation([("user", "hi, i'm albert sanders"), ("assistant", "Thanks, Albert!")],
                                        KnownValues(email="asanders1@email.com"))
    done.texts        # ["hi, i'm <PERSON_1>", "Thanks, <PERSON_1>!"]
    done.placeholders # {"<PERSON_1>": "albert sanders"}
    fill_placeholders("Thanks, <PERSON_1>!", done.placeholders).text   # at reply time
"""

import sys
from importlib.abc import MetaPathFinder
from typing import Any

from collector.pii.entities import KnownValues, PiiSpan, PiiType
from collector.pii.replies import FilledReply, fill_placeholders


# Presidio's analyzer imports Hugging Face's `transformers.pipeline` at module level whenever transformers is
# installed (it is: the trainer needs it), for NER engines and recognizers HouseStyle never uses (it runs spaCy's,
# `collector.pii.engine`). That costs seconds in every process that redacts (each `housestyle import`). Presidio
# treats a missing transformers as "that engine is unavailable": this finder makes it look missing to the module-level
# imports of presidio_analyzer's own modules only, and only while transformers is not imported yet. Everyone else
# (the trainer, in this process or any other) imports it as usual.
class _NoTransformersForPresidio(MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname == "transformers":
            frame = sys._getframe(1)
            while frame is not None:
                if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__", "").startswith(
                    "presidio_analyzer."
                ):
                    raise ModuleNotFoundError("HouseStyle's redaction does not use transformers", name=fullname)
                frame = frame.f_back
        return None


if not any(isinstance(finder, _NoTransformersForPresidio) for finder in sys.meta_path):
    sys.meta_path.insert(0, _NoTransformersForPresidio())

# the detection engine loads Presidio and spaCy (seconds, hundreds of MB): only code that redacts pays for it,
# not the service's reply path, which only fills placeholders
_ENGINE = {"ConversationRedactor", "RedactedConversation", "RedactedText", "RedactorConfig"}


def __getattr__(name: str) -> Any:
    if name in _ENGINE:
        from collector.pii import conversation

        return getattr(conversation, name)
    raise AttributeError(f"module 'collector.pii' has no attribute {name!r}")


__all__ = [
    "ConversationRedactor",
    "FilledReply",
    "KnownValues",
    "PiiSpan",
    "PiiType",
    "RedactedConversation",
    "RedactedText",
    "RedactorConfig",
    "fill_placeholders",
]
