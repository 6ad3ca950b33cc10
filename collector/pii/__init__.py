"""Personal data in support conversations: find it (Presidio + spaCy + HouseStyle's recognizers), replace it with
typed placeholders consistent within a conversation, and keep placeholders out of replies customers see.

    redactor = ConversationRedactor.from_settings(settings)           # once per process: loads spaCy
    done = redactor.redact_conversation([("user", "hi, i'm albert sanders"), ("assistant", "Thanks, Albert!")],
                                        KnownValues(email="asanders1@email.com"))
    done.texts        # ["hi, i'm <PERSON_1>", "Thanks, <PERSON_1>!"]
    done.placeholders # {"<PERSON_1>": "albert sanders"}
    fill_placeholders("Thanks, <PERSON_1>!", done.placeholders).text   # at reply time
"""

from collector.pii.conversation import ConversationRedactor, RedactedConversation, RedactedText, RedactorConfig
from collector.pii.entities import KnownValues, PiiSpan, PiiType
from collector.pii.replies import FilledReply, fill_placeholders

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
