"""Retention and erasure: raw text replaced by its redacted form after HOUSESTYLE_RAW_RETENTION_DAYS, and a
customer's conversations deleted everywhere in the store on request (`housestyle forget`), both audit-logged.

The audit log (`AuditEvent`) records who did it, when and how many rows, never the personal values themselves: an
erasure names its subject by a sha256 of the email, phone or conversation id asked for.
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import delete, func, or_, select, union, update

from core.db import session_scope
from core.errors import InputError
from core.knowledge_models import DraftGrounding
from core.models import AdapterVersion, AuditEvent, Conversation, Draft, Message, Review, utcnow
from core.settings import Settings

CONVERSATION_IDS = "conversation_ids.tsv"  # written by every export (collector.export.pipeline)
PURGE_BATCH = 500


def purge_expired_raw(url: str, settings: Settings, *, actor: str = "retention") -> int:
    """Replace the raw text of conversations older than the retention period by their redacted text; returns how many.

    Only fully redacted conversations are purged (the worker redacts the rest first), so nothing is lost for training.
    """
    if settings.raw_retention_days is None:
        return 0
    cutoff = utcnow() - timedelta(days=settings.raw_retention_days)
    purged = 0
    with session_scope(url) as session:
        unredacted = union(select(Message.conversation_id).where(Message.redacted_content.is_(None)),
                           select(Draft.conversation_id).where(Draft.redacted_content.is_(None)))
        while ids := list(session.execute(
            select(Conversation.id).where(Conversation.created_at < cutoff, Conversation.raw_purged_at.is_(None),
                                          Conversation.id.not_in(unredacted)).limit(PURGE_BATCH)
        ).scalars()):
            session.execute(update(Message).where(Message.conversation_id.in_(ids), Message.redacted_content.is_not(None))
                            .values(content=Message.redacted_content))
            session.execute(update(Draft).where(Draft.conversation_id.in_(ids), Draft.redacted_content.is_not(None))
                            .values(content=Draft.redacted_content, prompt=None))
            drafts = select(Draft.id).where(Draft.conversation_id.in_(ids))
            session.execute(update(Review).where(Review.draft_id.in_(drafts)).values(final_text=Review.redacted_final_text))
            session.execute(update(Conversation).where(Conversation.id.in_(ids)).values(
                known_values=None, placeholders=None, customer_ref=None, raw_purged_at=utcnow()))
            purged += len(ids)
        if purged:
            session.add(AuditEvent(action="purge-raw", actor=actor, detail={
                "conversations": purged, "older_than_days": settings.raw_retention_days}))
    return purged


class Forgotten(BaseModel):
    """What `forget` found and deleted (or would delete, on a dry run)."""

    conversations: list[str]  # "channel/external_id"
    messages: int
    adapter_versions: list[str]  # versions whose training export held any of them
    unknown_lineage: list[str]  # versions whose export folder is gone: cannot tell
    deleted: bool


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def matching_conversations(session, *, email: str | None = None, phone: str | None = None,
                           conversation: str | None = None) -> list[int]:
    """Ids of the conversations that hold this email / phone (known to the platform, or written in any text), or are
    this conversation (its external id on any channel, or its store id)."""
    if sum(value is not None for value in (email, phone, conversation)) != 1:
        raise InputError("name exactly one of --email, --phone or --conversation")
    texts = (Message.content, Draft.content, Review.final_text)
    found: set[int] = set()
    if conversation is not None:
        query = select(Conversation.id).where(Conversation.external_id == conversation.strip())
        if conversation.strip().isdigit():
            query = select(Conversation.id).where(or_(Conversation.external_id == conversation.strip(),
                                                      Conversation.id == int(conversation)))
        return sorted(session.execute(query).scalars())
    if email is not None:
        needle = email.strip().lower()
        if "@" not in needle:
            raise InputError(f"--email {email!r} is not an email address")
        for column in texts:
            found |= _conversations_whose(session, column, func.lower(column).contains(needle))
        candidates = session.execute(select(Conversation.id, Conversation.known_values).where(
            Conversation.known_values.is_not(None))).all()
        found |= {cid for cid, known in candidates if str((known or {}).get("email") or "").strip().lower() == needle}
        return sorted(found)
    wanted = _digits(phone or "")
    if len(wanted) < 7:
        raise InputError(f"--phone {phone!r} has fewer than 7 digits; give the whole number")
    national = wanted[-10:]  # "+1 415 555 0134" and "(415) 555-0134" are one number
    for column in texts:
        rough = _conversations_whose(session, column, column.contains(national[-4:]))
        for cid in rough:
            if _holds_number(session, cid, national):
                found.add(cid)
    candidates = session.execute(select(Conversation.id, Conversation.known_values).where(
        Conversation.known_values.is_not(None))).all()
    found |= {cid for cid, known in candidates if _digits(str((known or {}).get("phone") or "")).endswith(national)}
    return sorted(found)


def _conversations_whose(session, column, condition) -> set[int]:
    table = column.class_
    if table is Review:
        query = select(Draft.conversation_id).join(Review, Review.draft_id == Draft.id).where(condition)
    else:
        query = select(table.conversation_id).where(condition)
    return set(session.execute(query.distinct()).scalars())


def _holds_number(session, conversation_id: int, national: str) -> bool:
    rows = session.execute(select(Message.content).where(Message.conversation_id == conversation_id)).scalars().all()
    rows += session.execute(select(Draft.content).where(Draft.conversation_id == conversation_id)).scalars().all()
    return any(national in _digits(text or "") for text in rows)


def trained_on(session, conversation_ids: set[int]) -> tuple[list[str], list[str]]:
    """(versions whose training export held any of these conversations, versions whose export is gone)."""
    held, unknown = [], []
    for version, manifest in session.execute(select(AdapterVersion.version, AdapterVersion.manifest)).all():
        dataset = Path(str((manifest or {}).get("dataset") or ""))
        listing = dataset / CONVERSATION_IDS
        if not listing.is_file():
            unknown.append(version)
            continue
        with listing.open(encoding="utf-8") as lines:
            if any(int(line.split("\t")[1]) in conversation_ids for line in lines if "\t" in line):
                held.append(version)
    return held, unknown


def forget(url: str, *, actor: str, dry_run: bool = False, email: str | None = None, phone: str | None = None,
           conversation: str | None = None) -> Forgotten:
    """Delete a customer's conversations with their messages, drafts and reviews (one transaction), and say which
    adapter versions were trained on them; the next export (and refresh) no longer has them."""
    subject = email or phone or conversation or ""
    with session_scope(url) as session:
        ids = matching_conversations(session, email=email, phone=phone, conversation=conversation)
        names = [f"{channel}/{external}" for channel, external in session.execute(
            select(Conversation.channel, Conversation.external_id).where(Conversation.id.in_(ids))).all()]
        messages = session.execute(select(func.count()).select_from(Message).where(
            Message.conversation_id.in_(ids))).scalar_one()
        held, unknown = trained_on(session, set(ids))
        result = Forgotten(conversations=names, messages=messages, adapter_versions=held, unknown_lineage=unknown,
                           deleted=not dry_run and bool(ids))
        if dry_run or not ids:
            return result
        drafts = select(Draft.id).where(Draft.conversation_id.in_(ids))
        session.execute(delete(Review).where(Review.draft_id.in_(drafts)))
        session.execute(delete(Message).where(Message.conversation_id.in_(ids)))
        session.execute(delete(DraftGrounding).where(DraftGrounding.draft_id.in_(drafts)))  # passages it used
        session.execute(delete(Draft).where(Draft.conversation_id.in_(ids)))
        session.execute(delete(Conversation).where(Conversation.id.in_(ids)))
        kind = "email" if email else "phone" if phone else "conversation"
        session.add(AuditEvent(action="forget", actor=actor, detail={
            "by": kind, "subject_sha256": hashlib.sha256(subject.strip().lower().encode()).hexdigest(),
            "conversations": len(ids), "messages": messages, "adapter_versions": held,
        }))
    return result


def describe(result: Forgotten) -> str:
    """What happened, for people: one summary line and, when it matters, the adapters to retire or retrain."""
    verb = "deleted" if result.deleted else "would delete"
    lines = [f"{verb} {len(result.conversations)} conversations ({result.messages} messages)"
             + (": " + ", ".join(result.conversations[:10]) + (" …" if len(result.conversations) > 10 else "")
                if result.conversations else "")]
    if result.adapter_versions:
        lines.append("trained on them: " + ", ".join(result.adapter_versions)
                     + "; retire or retrain these versions (the next refresh trains without them)")
    if result.unknown_lineage:
        lines.append("training data no longer on disk for: " + ", ".join(result.unknown_lineage))
    return "\n".join(lines)


