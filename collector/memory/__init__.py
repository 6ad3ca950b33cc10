"""Answer memory: every reviewed exchange of a brand (redacted), retrievable as an example for the next similar
customer's prompt from the moment its review is recorded and redacted.

    exchanges  what memory holds, read from the store's redacted columns (and the stamp that says it moved)
    index      BM25 over the exchanges' customer text that grows without a rebuild
    recall     recall() for a conversation, the per-brand cache, recording which exchanges a draft leaned on
    marks      marking an exchange outdated
    cli        `housestyle memory search|outdated`

Memory is derived from the store's rows on every stamp move, so erasure (`housestyle forget`) and retention need
nothing of their own: a deleted exchange is gone from the next recall.
"""

from collector.memory.exchanges import exchanges_of_chats
from collector.memory.marks import mark_outdated
from collector.memory.recall import (
    Example,
    Recall,
    fit_examples,
    forget_indexes,
    memory_index,
    recall,
    recall_from_memory,
    recall_in,
    recalled_for,
    record_recall,
    training_keep,
)

__all__ = [
    "Example",
    "Recall",
    "exchanges_of_chats",
    "fit_examples",
    "forget_indexes",
    "mark_outdated",
    "memory_index",
    "recall",
    "recall_from_memory",
    "recall_in",
    "recalled_for",
    "record_recall",
    "training_keep",
]
