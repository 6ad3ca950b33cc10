"""Agent review: the queue of pending drafts, claiming one, and approving, editing or rejecting it."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from sqlmodel import Session

from collector import recorder
from collector import review_queue as queue  # the routes below reuse its function names
from collector.knowledge import groundings_for
from collector.memory import mark_outdated, recalled_for
from core.errors import NotFoundError
from core.models import Draft, ReviewDecision
from plugin.api.brand_scope import BrandFilter
from plugin.api.deps import AgentCaller, Caller, MetricsDep, SettingsDep, Store, StoreDep
from plugin.api.schemas import (
    ApproveIn,
    ClaimIn,
    ClaimOut,
    EditIn,
    MessageOut,
    OutdatedOut,
    PassageOut,
    PendingDraft,
    RecalledOut,
    RejectIn,
    ReviewOut,
)
from plugin.api.worddiff import word_diff

router = APIRouter(prefix="/reviews", tags=["reviews"])
DraftId = Annotated[int, Path(ge=1, le=2_147_483_647, description="The draft's id (from the queue).")]
ReviewId = Annotated[int, Path(ge=1, le=2_147_483_647, description="A recalled exchange's review id (the draft's "
                                                                   "`recalled`).")]

CONFLICT = {409: {"description": "Already reviewed, or claimed by another agent"}}


def in_scope(session: Session, caller: Caller, draft_id: int) -> Draft:
    """The draft, if it belongs to a brand the key may act on; another brand's draft answers as a missing one."""
    draft = queue.get_draft(session, draft_id)
    conversation = recorder.get_conversation(session, draft.conversation_id)
    caller.check_brand(conversation.brand_id, NotFoundError(f"draft {draft_id} does not exist"))
    return draft


def _pending_draft(session: Session, draft: Draft) -> PendingDraft:
    conversation = recorder.get_conversation(session, draft.conversation_id)
    # what the draft answered: the turns before its slot (a follow-up question after it has its own draft)
    context = [
        MessageOut.model_validate(m, from_attributes=True)
        for m in recorder.transcript(session, conversation.id)
        if m.position < draft.position
    ]
    return PendingDraft(
        draft_id=draft.id,
        conversation_id=conversation.id,
        brand_id=conversation.brand_id,
        channel=conversation.channel,
        mode=conversation.mode,
        draft=draft.content,
        adapter_version=draft.adapter_version,
        latency_ms=draft.latency_ms,
        handoff_reason=draft.handoff_reason,
        created_at=draft.created_at,
        claimed_by=draft.claimed_by,
        claimed_until=draft.claimed_until,
        context=context,
        passages=[PassageOut.model_validate(p.model_dump()) for p in _grounding(session, draft.id)],
        recalled=[RecalledOut(review_id=e.review_id, customer=e.customer, reply=e.reply, score=e.score)
                  for e in recalled_for(session, [draft.id]).get(draft.id, [])],
    )


def _grounding(session: Session, draft_id: int) -> list:
    grounding = groundings_for(session, [draft_id]).get(draft_id)
    return grounding.passages if grounding is not None else []


@router.get("/queue", response_model=list[PendingDraft], summary="Drafts waiting for an agent, oldest first")
def review_queue(
    _: AgentCaller, brands: BrandFilter, store: StoreDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[PendingDraft]:
    """Of the brand named (?brand=), else of every brand the key may act on."""
    with store.session() as session:
        return [_pending_draft(session, draft)
                for draft in queue.pending_drafts(session, limit=limit, brand_ids=brands)]


@router.get("/{draft_id}", response_model=PendingDraft, summary="One draft with its conversation")
def get_draft(draft_id: DraftId, caller: AgentCaller, store: StoreDep) -> PendingDraft:
    with store.session() as session:
        return _pending_draft(session, in_scope(session, caller, draft_id))


@router.post("/{draft_id}/claim", response_model=ClaimOut, responses=CONFLICT, summary="Reserve a draft for review")
def claim_draft(
    draft_id: DraftId, body: ClaimIn, caller: AgentCaller, store: StoreDep, settings: SettingsDep, request: Request
) -> ClaimOut:
    """Two agents never review the same draft: a live claim by someone else answers 409; a stale one is taken over."""
    ttl = timedelta(seconds=settings.claim_ttl_seconds)
    # sqlite has no row locks: this process's claims and reviews go one at a time (Postgres also locks the row)
    with request.app.state.review_lock, store.session() as session:
        in_scope(session, caller, draft_id)
        draft = queue.claim_draft(session, draft_id, caller.acting_as(body.agent), ttl=ttl)
    return ClaimOut(draft_id=draft.id, claimed_by=draft.claimed_by, claimed_until=draft.claimed_until)


@router.post("/{draft_id}/release", response_model=PendingDraft, responses=CONFLICT, summary="Give a claimed draft back")
def release_draft(draft_id: DraftId, body: ClaimIn, caller: AgentCaller, store: StoreDep, request: Request) -> PendingDraft:
    """For an agent who opened a draft and moved on without deciding: others may take it at once (409 if another
    agent holds it)."""
    with request.app.state.review_lock, store.session() as session:
        in_scope(session, caller, draft_id)
        draft = queue.release_claim(session, draft_id, caller.acting_as(body.agent))
        return _pending_draft(session, draft)


@router.post("/{draft_id}/typing", response_model=ClaimOut, responses=CONFLICT, summary="Say the agent is typing")
def agent_typing(
    draft_id: DraftId, body: ClaimIn, caller: AgentCaller, store: StoreDep, settings: SettingsDep, request: Request
) -> ClaimOut:
    """Send every few seconds while writing: the customer's widget shows "An agent is typing…" for a few seconds
    after each call, and the claim is renewed. Claims the draft if nobody holds it; 409 if another agent does."""
    ttl = timedelta(seconds=settings.claim_ttl_seconds)
    with request.app.state.review_lock, store.session() as session:
        in_scope(session, caller, draft_id)
        draft = queue.mark_typing(session, draft_id, caller.acting_as(body.agent), ttl=ttl)
    return ClaimOut(draft_id=draft.id, claimed_by=draft.claimed_by, claimed_until=draft.claimed_until,
                    typing_until=draft.typing_until)


def _review(
    request: Request,
    store: Store,
    metrics: MetricsDep,
    caller: Caller,
    draft_id: DraftId,
    decision: ReviewDecision,
    agent: str | None,
    final_text: str | None = None,
    reason: str | None = None,
) -> ReviewOut:
    with request.app.state.review_lock, store.session() as session:
        in_scope(session, caller, draft_id)
        review = recorder.record_review(
            session, draft_id, decision, agent_id=caller.acting_as(agent), final_text=final_text, reason=reason
        )
        draft = queue.get_draft(session, draft_id)
    metrics.count_review(review.decision, draft.adapter_version)
    return ReviewOut(
        draft_id=draft_id,
        decision=review.decision,
        draft=draft.content,
        final_text=review.final_text,
        agent=review.agent_id,
        edit_distance=review.edit_distance,
        diff=word_diff(draft.content, review.final_text) if review.final_text is not None else [],
    )


@router.post("/{draft_id}/recalled/{review_id}/outdated", response_model=OutdatedOut,
             summary="Mark a past reply the draft leaned on outdated")
def mark_recalled_outdated(
    draft_id: DraftId, review_id: ReviewId, caller: AgentCaller, store: StoreDep, request: Request,
    body: ClaimIn | None = None,
) -> OutdatedOut:
    """One of the draft's `recalled` exchanges: answer memory never offers it to a prompt again (its review stays,
    for training). 404 for a draft of another brand, or a review the draft did not lean on."""
    with request.app.state.review_lock, store.session() as session:
        draft = in_scope(session, caller, draft_id)
        if review_id not in {e.review_id for e in recalled_for(session, [draft_id]).get(draft_id, [])}:
            raise NotFoundError(f"draft {draft_id} leaned on no review {review_id}")
        brand_id = recorder.get_conversation(session, draft.conversation_id).brand_id
        marked = mark_outdated(session, review_id, actor=caller.acting_as(body.agent if body else None),
                               brand_id=brand_id)
    return OutdatedOut(review_id=review_id, already=not marked)


@router.post("/{draft_id}/approve", response_model=ReviewOut, responses=CONFLICT, summary="Send the draft unchanged")
def approve_draft(
    draft_id: DraftId, body: ApproveIn, caller: AgentCaller, store: StoreDep, metrics: MetricsDep, request: Request
) -> ReviewOut:
    return _review(request, store, metrics, caller, draft_id, ReviewDecision.APPROVED, body.agent)


@router.post("/{draft_id}/edit", response_model=ReviewOut, responses=CONFLICT, summary="Send the agent's version")
def edit_draft(
    draft_id: DraftId, body: EditIn, caller: AgentCaller, store: StoreDep, metrics: MetricsDep, request: Request
) -> ReviewOut:
    """The final text is stored beside the draft; the answer includes a word-level diff between them."""
    return _review(
        request, store, metrics, caller, draft_id, ReviewDecision.EDITED, body.agent, body.final_text, body.reason
    )


@router.post("/{draft_id}/reject", response_model=ReviewOut, responses=CONFLICT, summary="Do not send the draft")
def reject_draft(
    draft_id: DraftId, body: RejectIn, caller: AgentCaller, store: StoreDep, metrics: MetricsDep, request: Request
) -> ReviewOut:
    """Optionally with the reply the agent wrote instead (the customer sees it) and a reason."""
    return _review(
        request, store, metrics, caller, draft_id, ReviewDecision.REJECTED, body.agent, body.reply, body.reason
    )
