"""Retention and erasure: raw text replaced by its redacted form after HOUSESTYLE_RAW_RETENTION_DAYS, and a
customer's conversations deleted everywhere in the store on request (`housestyle forget`), both audit-logged.

The audit log (`AuditEvent`) records who did it, when and how many rows, never the personal values themselves: an
erasure names its subject by a sha256 of the email, phone or conversation id asked for.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import phonenumbers
from pydantic import BaseModel
from sqlalchemy import delete, func, or_, select, union, update

from core.db import session_scope
from core.errors import InputError
from core.knowledge_models import DraftGrounding
from core.models import (
    AdapterVersion,
    AuditEvent,
    Conversation,
    Draft,
    MemoryOutdated,
    MemoryUse,
    Message,
    Review,
    utcnow,
)
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
    reasons: dict[str, str] = {}  # "channel/external_id" -> why it matched


# an email address as a whole: a match inside "bojo@example.com" or "jo@example.community" is not "jo@example.com"
EMAIL_IN_TEXT = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
Matcher = Callable[[str], bool]


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def normalised_email(value: str) -> str:
    """An email address as erasure compares it: one whole address, lower case; else an InputError."""
    needle = value.strip().lower()
    if not EMAIL_IN_TEXT.fullmatch(needle):
        raise InputError(f"--email {value!r} is not one email address")
    return needle


def emails_in(text: str) -> set[str]:
    """Every whole email address written in `text`, lower case."""
    return {found.lower() for found in EMAIL_IN_TEXT.findall(text or "")}


def phone_number(value: str, region: str) -> str | None:
    """A phone number as erasure compares it: E.164 ("+14155550134"), read as libphonenumber reads it (national
    numbers in `region`); None when it is not a possible number."""
    try:
        number = phonenumbers.parse("+" + value.strip()[2:] if value.strip().startswith("00") else value, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def phones_in(text: str, region: str) -> set[str]:
    """Every whole phone number written in `text`, as E.164: digits scattered over a sentence are not one."""
    matches = phonenumbers.PhoneNumberMatcher(text or "", region, leniency=phonenumbers.Leniency.POSSIBLE)
    return {phonenumbers.format_number(m.number, phonenumbers.PhoneNumberFormat.E164) for m in matches}


def matching_conversations(session, *, email: str | None = None, phone: str | None = None,
                           conversation: str | None = None, region: str = "US") -> dict[int, str]:
    """The conversations that hold this email / phone as a whole (known to the platform, or written in any text),
    or are this conversation (its external id on any channel, or its store id): id -> why it matched."""
    if sum(value is not None for value in (email, phone, conversation)) != 1:
        raise InputError("name exactly one of --email, --phone or --conversation")
    if conversation is not None:
        query = select(Conversation.id).where(Conversation.external_id == conversation.strip())
        if conversation.strip().isdigit():
            query = select(Conversation.id).where(or_(Conversation.external_id == conversation.strip(),
                                                      Conversation.id == int(conversation)))
        return {cid: "its conversation id" for cid in session.execute(query).scalars()}
    if email is not None:
        needle = normalised_email(email)
        return _matching_identity(session, "email", needle, rough=needle, holds=lambda text: needle in emails_in(text),
                                  known=lambda value: value.strip().lower() == needle)
    if len(_digits(phone or "")) < 7:
        raise InputError(f"--phone {phone!r} has fewer than 7 digits; give the whole number")
    wanted = phone_number(phone or "", region)
    if wanted is None:
        raise InputError(f"--phone {phone!r} is not a phone number (read with region {region}, "
                         "HOUSESTYLE_PHONE_REGION); give it with its country code, e.g. +1 415 555 0134")
    return _matching_identity(session, "phone", wanted, rough=_digits(wanted)[-2:],
                              holds=lambda text: wanted in phones_in(text, region),
                              known=lambda value: phone_number(value, region) == wanted)


def _matching_identity(session, kind: str, wanted: str, *, rough: str, holds: Matcher, known: Matcher) -> dict[int, str]:
    """Conversations whose contact details hold `wanted` (`known`), or one of whose texts holds it whole (`holds`);
    `rough`: a substring every such text contains (escaped: no LIKE wildcard), so only those are read."""
    found: dict[int, str] = {}
    candidates = session.execute(select(Conversation.id, Conversation.known_values).where(
        Conversation.known_values.is_not(None))).all()
    for cid, values in candidates:
        if known(str((values or {}).get(kind) or "")):
            found[cid] = f"{kind} in the customer's contact details"
    for column, where in ((Message.content, "a message"), (Draft.content, "a draft"),
                          (Review.final_text, "an agent's reply")):
        for cid, text in _texts_containing(session, column, rough):
            if cid not in found and holds(text):
                found[cid] = f"{kind} written in {where}"
    return found


def _texts_containing(session, column, rough: str) -> list[tuple[int, str]]:
    """(conversation id, text) of the texts in `column` that contain `rough`, case-insensitively."""
    condition = func.lower(column).contains(rough.lower(), autoescape=True)
    if column.class_ is Review:
        query = select(Draft.conversation_id, column).join(Review, Review.draft_id == Draft.id).where(condition)
    else:
        query = select(column.class_.conversation_id, column).where(condition)
    return [(cid, text or "") for cid, text in session.execute(query).all()]


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
           conversation: str | None = None, region: str = "US") -> Forgotten:
    """Delete a customer's conversations with their messages, drafts and reviews (one transaction), and say which
    adapter versions were trained on them; the next export (and refresh) no longer has them. An email or phone
    matches only as a whole, normalised identity (`region`: how national phone numbers are read)."""
    with session_scope(url) as session:
        why = matching_conversations(session, email=email, phone=phone, conversation=conversation, region=region)
        ids = sorted(why)
        subject = (normalised_email(email) if email is not None
                   else phone_number(phone, region) if phone is not None else conversation) or ""
        rows = session.execute(select(Conversation.id, Conversation.channel, Conversation.external_id)
                               .where(Conversation.id.in_(ids)).order_by(Conversation.id)).all()
        names = [f"{channel}/{external}" for _, channel, external in rows]
        messages = session.execute(select(func.count()).select_from(Message).where(
            Message.conversation_id.in_(ids))).scalar_one()
        held, unknown = trained_on(session, set(ids))
        result = Forgotten(conversations=names, messages=messages, adapter_versions=held, unknown_lineage=unknown,
                           deleted=not dry_run and bool(ids),
                           reasons={f"{channel}/{external}": why[cid] for cid, channel, external in rows})
        if dry_run or not ids:
            return result
        drafts = select(Draft.id).where(Draft.conversation_id.in_(ids))
        reviews = select(Review.id).where(Review.draft_id.in_(drafts))
        # answer memory's rows about them (memory itself is read from these rows: the next recall has none of them)
        session.execute(delete(MemoryUse).where(or_(MemoryUse.draft_id.in_(drafts), MemoryUse.review_id.in_(reviews))))
        session.execute(delete(MemoryOutdated).where(MemoryOutdated.review_id.in_(reviews)))
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
    if not result.deleted:  # a dry run: what would go and why, one line each
        lines += [f"  {name}: {reason}" for name, reason in result.reasons.items()]
    if result.adapter_versions:
        lines.append("trained on them: " + ", ".join(result.adapter_versions)
                     + "; retire or retrain these versions (the next refresh trains without them)")
    if result.unknown_lineage:
        lines.append("training data no longer on disk for: " + ", ".join(result.unknown_lineage))
    return "\n".join(lines)


