"""Personal data in support conversations: find it (Presidio + spaCy + HouseStyle's recognizers), replace it with
typed placeholders consistent within a conversation, and keep placeholders out of replies customers see.

    redactor = ConversationRedactor.from_settings(settings)           # once per process: loads spaCy
    done = redactor.redact_conversation([("user", "hi, i'm albert sanders"), ("assistant", "Thanks, Albert!")],
                                        KnownValues(email="asanders1@email.com"))
    done.texts        # ["hi, i'm <PERSON_1>", "Thanks, <PERSON_1>!"]
    done.placeholders # {"<PERSON_1>": "albert sanders"}
    fill_placeholders("Thanks, <PERSON_1>!", done.placeholders).text   # at reply time
"""

from typing import Any

from collector.pii.entities import KnownValues, PiiSpan, PiiType
from collector.pii.replies import FilledReply, fill_placeholders

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
