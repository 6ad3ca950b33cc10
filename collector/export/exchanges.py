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

from core.models import DraftStatus, ReviewDecision, Role
from core.prompts import TURN_JOINER

PENDING = "pending review"  # the reason a conversation with an undecided draft is skipped
_USER, _ASSISTANT = Role.USER.value, Role.ASSISTANT.value  # plain strings: compared for every turn exported
_APPROVED, _PENDING_STATUS = ReviewDecision.APPROVED.value, DraftStatus.PENDING.value
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


class Answer(NamedTuple):
    """One reply slot of a conversation: the customer turns it answered and what the agent did with the draft."""

    asked: list[str]  # customer turns since the previous reply ([]: a second reply in a row)
    decision: str
    sent: str | None  # what the customer got (None or blank: nothing went out)
    draft: str | None  # the assistant's draft; None when an agent wrote the reply with no draft behind it
    draft_id: int | None = None  # the draft behind the reply (None: an agent wrote it)


def _position(turn: StoredTurn) -> int:
    return turn.position


def conversation_answers(turns: list[StoredTurn], drafts: dict[int, DraftOutcome]) -> list[Answer] | str:
    """Every reply slot of a conversation in the order the customer saw them, or the reason to skip it whole.

    `drafts` maps draft id -> outcome for every draft of the conversation, including those that never became a
    message (pending, or rejected with no reply). Customer turns after the last reply are left out.
    """
    said = {turn.draft_id for turn in turns if turn.draft_id is not None}
    unsaid = [(d.position, 0, _ASSISTANT, None, draft_id) for draft_id, d in drafts.items() if draft_id not in said]
    if unsaid:
        # a draft that never became a message leaves its position to the next turn, so at equal positions it comes
        # first: it answered the turns before it
        events = [(turn.position, 1, turn.role, turn.content, turn.draft_id) for turn in turns] + unsaid
        events.sort(key=lambda event: event[:2])
        transcript = [event[2:] for event in events]
    else:  # every draft is a message: the turns in position order (the store reads them so already)
        transcript = [turn[1:] for turn in sorted(turns, key=_position)]
    answers: list[Answer] = []
    waiting: list[str] = []  # customer turns not answered yet
    for role, content, draft_id in transcript:
        if role == _USER:
            waiting.append(content or "")
            continue
        if role != _ASSISTANT:
            continue  # stored system messages: the company system prompt replaces them
        if draft_id is None:
            answers.append(Answer(waiting, _APPROVED, content, None))
        else:
            outcome = drafts[draft_id]
            if outcome.status == _PENDING_STATUS or outcome.decision is None:
                return PENDING
            answers.append(Answer(waiting, outcome.decision, outcome.final_text, outcome.draft_text, draft_id))
        waiting = []
    return answers


def build_exchanges(
    turns: list[StoredTurn],
    drafts: dict[int, DraftOutcome],
    kept: set[str],
    dropped_turns: Counter[str],
    replied_by: list[int | None] | None = None,
) -> list[Exchange] | str:
    """A conversation's kept (customer, reply) exchanges, or the reason to skip it whole.

    `drafts` as for `conversation_answers`. Replies dropped are counted by reason in `dropped_turns`.
    `replied_by`, if given, gets one item per exchange: the draft behind its reply (None: an agent wrote it).
    """
    answers = conversation_answers(turns, drafts)
    if isinstance(answers, str):
        return answers
    exchanges: list[Exchange] = []
    for answer in answers:
        decision, text = answer.decision, answer.sent
        if decision not in kept or not text or not text.strip():
            dropped_turns[f"{decision} reply" if decision not in kept else "empty reply"] += 1
            # the customer turns it answered go with it
        elif answer.asked:
            exchanges.append([TURN_JOINER.join(answer.asked), text])
            if replied_by is not None:
                replied_by.append(answer.draft_id)
        elif exchanges:
            exchanges[-1][1] += TURN_JOINER + text
        else:
            dropped_turns["reply before any customer message"] += 1
    return exchanges
