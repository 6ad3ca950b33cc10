"""What of a conversation becomes training data: its (customer, reply) exchanges, built from stored turns and reviews.

Only reviewed data goes in. Per conversation, in `Message.position` order, customer turns and the agents' final
texts (`Review.final_text`; a draft's own text is never exported). A reply whose decision is not kept (default:
rejected) is dropped with the customer turn(s) it answered. Consecutive customer turns are joined with a blank line,
as are consecutive replies. An assistant message with no draft behind it was written by an agent directly and
counts as approved. A conversation with a draft still waiting for review is skipped whole (`PENDING`). Stored
system messages are not exported: the company's system prompt replaces them.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

from collector.models import DraftStatus, ReviewDecision, Role
from collector.prompts import TURN_JOINER

PENDING = "pending review"  # the reason a conversation with an undecided draft is skipped
# [customer text, reply], and with grounding a third item: the knowledge passages its prompt carries, [[title, text]...]
Exchange = list


class StoredTurn(NamedTuple):
    """A message of the transcript, as read from the store."""

    position: int
    role: str
    content: str | None
    draft_id: int | None


class DraftOutcome(NamedTuple):
    """A draft and what the agent did with it (decision None: no review yet)."""

    position: int
    status: str
    decision: str | None
    final_text: str | None
    adapter_version: str | None = None  # None: the base model (or imported history)
    agent_id: str | None = None
    edit_distance: float | None = None
    draft_text: str | None = None  # what the assistant drafted (preference data pairs it with the final text)


def build_exchanges(
    turns: list[StoredTurn],
    drafts: dict[int, DraftOutcome],
    kept: set[str],
    dropped_turns: Counter[str],
    replied_by: list[int | None] | None = None,
) -> list[Exchange] | str:
    """A conversation's kept (customer, reply) exchanges, or the reason to skip it whole.

    `drafts` maps draft id -> outcome for every draft of the conversation, including those that never became a
    message (pending, or rejected with no reply). Replies dropped are counted by reason in `dropped_turns`.
    `replied_by`, if given, gets one item per exchange: the draft behind its reply (None: an agent wrote it).
    """
    said = {turn.draft_id for turn in turns if turn.draft_id is not None}
    # a draft that never became a message leaves its position to the next turn, so at equal positions it comes
    # first: it answered the turns before it
    events = [(turn.position, 1, turn.role, turn.content, turn.draft_id) for turn in turns]
    events += [(d.position, 0, Role.ASSISTANT.value, None, draft_id) for draft_id, d in drafts.items()
               if draft_id not in said]
    events.sort(key=lambda event: event[:2])
    exchanges: list[Exchange] = []
    waiting: list[str] = []  # customer turns not answered yet
    for _, _, role, content, draft_id in events:
        if role == Role.USER:
            waiting.append(content or "")
            continue
        if role != Role.ASSISTANT:
            continue  # stored system messages: the company system prompt replaces them
        if draft_id is None:
            decision, text = ReviewDecision.APPROVED.value, content
        else:
            outcome = drafts[draft_id]
            if outcome.status == DraftStatus.PENDING or outcome.decision is None:
                return PENDING
            decision, text = outcome.decision, outcome.final_text
        if decision not in kept or not text or not text.strip():
            dropped_turns[f"{decision} reply" if decision not in kept else "empty reply"] += 1
            waiting = []  # the customer turns it answered go with it
        elif waiting:
            exchanges.append([TURN_JOINER.join(waiting), text])
            if replied_by is not None:
                replied_by.append(draft_id)
            waiting = []
        elif exchanges:
            exchanges[-1][1] += TURN_JOINER + text
        else:
            dropped_turns["reply before any customer message"] += 1
    return exchanges
