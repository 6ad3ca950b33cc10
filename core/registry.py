"""The adapter registry: versioned LoRA adapters, their lifecycle status, and the history of who changed what."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select, text, update
from sqlmodel import Session

from core.db import session_scope
from core.errors import ConflictError, InputError, NotFoundError
from core.models import DEFAULT_BRAND_ID, AdapterEvent, AdapterStatus, AdapterVersion

# What a version id may look like wherever one comes in (CLI, admin API path, files): it ends up in URL paths and
# vLLM adapter names, so no '/', '?', '%', spaces, or a leading '.' ('..' would walk up a path).
VERSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
_VERSION_ID = re.compile(VERSION_ID_PATTERN)
WENT_LIVE = ("promote", "rollback")  # the events that make a version its brand's live one
# Postgres channel every change of what is served is NOTIFYed on (in the change's own transaction, so a listener
# wakes only once it is committed); the services on the store LISTEN on it (`serving.follow`)
REGISTRY_CHANNEL = "housestyle_registry"


def check_version_id(version: str) -> str:
    """`version` if it is a well-formed version id, else an InputError naming the rule."""
    if not _VERSION_ID.fullmatch(version):
        shown = version if len(version) <= 60 else version[:60] + "..."
        raise InputError(
            f"{shown!r} is not an adapter version id: use 1 to 100 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (e.g. v0003-1a2b3c4d; `housestyle adapters list` shows them)"
        )
    return version


def new_version_id(session: Session, content_hash: str) -> str:
    """A fresh, never-reused version id such as `v0003-1a2b3c4d` (sequence number + adapter content hash)."""
    count = session.execute(select(func.count()).select_from(AdapterVersion)).scalar() or 0
    return f"v{count + 1:04d}-{content_hash[:8]}"


def register_adapter(
    session: Session,
    *,
    version: str,
    path: str,
    base_model: str,
    rank: int,
    base_model_hash: str | None = None,
    dataset_hash: str | None = None,
    metrics: dict[str, Any] | None = None,
    manifest: dict[str, Any] | None = None,
    training_run_id: int | None = None,
    actor: str = "trainer",
    brand_id: int = DEFAULT_BRAND_ID,
) -> AdapterVersion:
    """Add a trained adapter as a candidate of its brand."""
    if session.execute(select(AdapterVersion.id).where(AdapterVersion.version == version)).first():
        raise ConflictError(f"adapter version {version} is already registered; versions are never reused")
    adapter = AdapterVersion(
        version=version,
        path=path,
        base_model=base_model,
        base_model_hash=base_model_hash,
        dataset_hash=dataset_hash,
        rank=rank,
        metrics=metrics,
        manifest=manifest,
        training_run_id=training_run_id,
        brand_id=brand_id,
    )
    session.add(adapter)
    session.add(AdapterEvent(version=version, action="register", actor=actor))
    session.flush()
    return adapter


def record_held_out(session: Session, version: str, scores: dict[str, Any]) -> None:
    """Keep a version's held-out figures from the refresh that scored it (chrF, loss, the simulated correction
    rate...) in its metrics under "held_out", where the dashboard shows them per version."""
    adapter = get_adapter(session, version)
    adapter.metrics = {**(adapter.metrics or {}), "held_out": scores}
    session.add(adapter)


def get_adapter(session: Session, version: str) -> AdapterVersion:
    adapter = session.execute(select(AdapterVersion).where(AdapterVersion.version == version)).scalar_one_or_none()
    if adapter is None:
        raise NotFoundError(f"adapter version {version} is not registered; `housestyle adapters list` shows them")
    return adapter


def list_adapters(session: Session, brand_id: int | None = None) -> list[AdapterVersion]:
    """Every registered version (of one brand, or of all), newest first."""
    query = select(AdapterVersion).order_by(AdapterVersion.id.desc())
    if brand_id is not None:
        query = query.where(AdapterVersion.brand_id == brand_id)
    return list(session.execute(query).scalars())


def adapters_with_status(
    session: Session, status: AdapterStatus, brand_id: int | None = DEFAULT_BRAND_ID
) -> list[AdapterVersion]:
    """One brand's versions in `status` (brand_id None: every brand's), newest first."""
    query = select(AdapterVersion).where(AdapterVersion.status == status).order_by(AdapterVersion.id.desc())
    if brand_id is not None:
        query = query.where(AdapterVersion.brand_id == brand_id)
    return list(session.execute(query).scalars())


def live_adapter(session: Session, brand_id: int = DEFAULT_BRAND_ID) -> AdapterVersion | None:
    """The version behind the brand's public model name, or None while the base model serves it alone."""
    live = adapters_with_status(session, AdapterStatus.LIVE, brand_id)
    return live[0] if live else None


def set_status(
    session: Session,
    version: str,
    status: AdapterStatus,
    *,
    action: str,
    actor: str = "system",
    reason: str | None = None,
    canary_share: float | None = None,
) -> AdapterVersion:
    """Move a version to a new lifecycle status and record the event with who and why."""
    adapter = get_adapter(session, version)
    adapter.status = status
    if canary_share is not None:
        adapter.canary_share = canary_share
    elif status != AdapterStatus.CANARY:
        adapter.canary_share = 0.0
    session.add(adapter)
    session.add(AdapterEvent(version=version, action=action, actor=actor, reason=reason))
    session.flush()
    notify_registry_change(session)
    return adapter


def notify_registry_change(session: Session) -> None:
    """Postgres: NOTIFY the services following the registry, delivered when this transaction commits (and
    once per transaction, however many changes it holds). Other stores: nothing; the services re-read periodically."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"NOTIFY {REGISTRY_CHANNEL}"))


def history(session: Session, version: str | None = None, *, limit: int = 100,
            brand_id: int | None = None) -> list[AdapterEvent]:
    """Registry events, newest first (optionally for one version, or one brand's versions)."""
    query = select(AdapterEvent).order_by(AdapterEvent.id.desc()).limit(limit)
    if version is not None:
        query = query.where(AdapterEvent.version == version)
    if brand_id is not None:
        query = query.where(AdapterEvent.version.in_(
            select(AdapterVersion.version).where(AdapterVersion.brand_id == brand_id)))
    return list(session.execute(query).scalars())


def went_live(session: Session, version: str) -> AdapterEvent | None:
    """The event that last made `version` live (its newest promote or rollback), if any did."""
    return session.execute(
        select(AdapterEvent).where(AdapterEvent.version == version, AdapterEvent.action.in_(WENT_LIVE))
        .order_by(AdapterEvent.id.desc()).limit(1)
    ).scalar_one_or_none()


def previous_live(session: Session, current: str | None, brand_id: int = DEFAULT_BRAND_ID) -> str | None:
    """THE version live before `current` (the brand's live version; None: none is): the newest promote or rollback of
    another of the brand's versions. None when there is none: before it, the base model served alone.

    Every promote or rollback retires the version it replaces, so with `current` live no other version went live
    after it: this is the version it replaced, whichever way it went live."""
    query = select(AdapterEvent.version).where(
        AdapterEvent.action.in_(WENT_LIVE),
        AdapterEvent.version.in_(select(AdapterVersion.version).where(AdapterVersion.brand_id == brand_id)),
    )
    if current is not None:
        query = query.where(AdapterEvent.version != current)
    return session.execute(query.order_by(AdapterEvent.id.desc()).limit(1)).scalar_one_or_none()


# ---- promote / rollback / canary: one transaction each, by store URL (the swap protocol's registry side) ----


def adapter_path(version: str, *, database_url: str) -> str:
    with session_scope(database_url) as session:
        return get_adapter(session, version).path


def mark_live(version: str, *, action: str, actor: str, reason: str | None, database_url: str,
              vllm_name: str | None = None) -> str | None:
    """Make `version` its brand's live version and retire the one before it; returns the retired version.
    `vllm_name`: the name the shared replicas serve it under (None: the next service to serve it claims one)."""
    with session_scope(database_url) as session:
        brand = get_adapter(session, version).brand_id
        previous = [adapter.version for adapter in adapters_with_status(session, AdapterStatus.LIVE, brand)]
        for old in previous:
            if old != version:
                # kept on disk either way; "rolled-back" tells the timeline it was taken off, not just superseded
                retire, why = ("rolled-back", "rolled back to") if action == "rollback" else ("retire", "replaced by")
                set_status(session, old, AdapterStatus.RETIRED, action=retire, actor=actor, reason=f"{why} {version}")
        live = set_status(session, version, AdapterStatus.LIVE, action=action, actor=actor, reason=reason)
        live.vllm_name = vllm_name
    others = [old for old in previous if old != version]
    return others[0] if others else None


def mark_canary(
    version: str, share: float, *, actor: str, reason: str | None, database_url: str, vllm_name: str | None = None
) -> str | None:
    """Make `version` its brand's one canary with `share`; a previous canary goes back to candidate. Returns it.
    `vllm_name` as for `mark_live`."""
    with session_scope(database_url) as session:
        brand = get_adapter(session, version).brand_id
        previous = [adapter.version for adapter in adapters_with_status(session, AdapterStatus.CANARY, brand)]
        for old in previous:
            if old != version:
                set_status(session, old, AdapterStatus.CANDIDATE, action="canary-end", actor=actor,
                           reason=f"replaced by {version}")
        canary = set_status(session, version, AdapterStatus.CANARY, action="canary", actor=actor, reason=reason,
                            canary_share=share)
        canary.vllm_name = vllm_name
    others = [old for old in previous if old != version]
    return others[0] if others else None


SERVED = (AdapterStatus.LIVE, AdapterStatus.CANARY)


def shared_vllm_name(version: str, *, database_url: str) -> str | None:
    """The name the shared replicas serve `version` under now; None when none is recorded or it is not served."""
    with session_scope(database_url) as session:
        adapter = get_adapter(session, version)
        return adapter.vllm_name if adapter.status in SERVED else None


def claim_vllm_name(version: str, candidate: str, *, database_url: str) -> str | None:
    """`shared_vllm_name`, after recording `candidate` when none was (of several services claiming at once, exactly
    one wins): a version made live without a name (by the CLI with no service running) gets one."""
    with session_scope(database_url) as session:
        session.execute(update(AdapterVersion).where(
            AdapterVersion.version == version, AdapterVersion.vllm_name.is_(None),
            AdapterVersion.status.in_(SERVED)).values(vllm_name=candidate))
    return shared_vllm_name(version, database_url=database_url)


def end_canary(version: str, *, actor: str, reason: str | None, database_url: str) -> None:
    with session_scope(database_url) as session:
        set_status(session, version, AdapterStatus.CANDIDATE, action="canary-end", actor=actor, reason=reason)


def mark_rejected(version: str, *, actor: str, reason: str, database_url: str) -> None:
    with session_scope(database_url) as session:
        set_status(session, version, AdapterStatus.REJECTED, action="reject", actor=actor, reason=reason)


def recorded_fingerprint(version: str, *, database_url: str) -> str | None:
    """The fingerprint recorded for `version` (`serving.fingerprint`), None while none is."""
    with session_scope(database_url) as session:
        return get_adapter(session, version).fingerprint


def record_fingerprint(version: str, fingerprint: str, *, replacing: str | None, database_url: str) -> str | None:
    """Record `fingerprint` for `version` unless the recorded one is no longer `replacing` (None: none recorded):
    one conditional UPDATE, so of two services loading a version for the first time at once, the first to write
    wins. Returns the fingerprint recorded now, whoever wrote it."""
    unchanged = (AdapterVersion.fingerprint.is_(None) if replacing is None
                 else AdapterVersion.fingerprint == replacing)
    with session_scope(database_url) as session:
        session.execute(update(AdapterVersion).where(AdapterVersion.version == version, unchanged)
                        .values(fingerprint=fingerprint))
        return session.execute(select(AdapterVersion.fingerprint).where(AdapterVersion.version == version)
                               ).scalar_one()


def registry_live_version(*, database_url: str, brand_id: int = DEFAULT_BRAND_ID) -> str | None:
    with session_scope(database_url) as session:
        live = adapters_with_status(session, AdapterStatus.LIVE, brand_id)
        return live[0].version if live else None


def registry_canary(*, database_url: str, brand_id: int = DEFAULT_BRAND_ID) -> tuple[str, float] | None:
    with session_scope(database_url) as session:
        canaries = adapters_with_status(session, AdapterStatus.CANARY, brand_id)
        return (canaries[0].version, canaries[0].canary_share) if canaries else None


def brand_of(version: str, *, database_url: str) -> int:
    """The brand a registered version belongs to."""
    with session_scope(database_url) as session:
        return get_adapter(session, version).brand_id


def previous_live_version(current: str | None, *, database_url: str, brand_id: int = DEFAULT_BRAND_ID) -> str:
    """`previous_live`, for a rollback that names no version: there must be one to go back to."""
    with session_scope(database_url) as session:
        previous = previous_live(session, current, brand_id)
    if previous is not None:
        return previous
    raise NotFoundError("there is no earlier live version to roll back to; name one: `housestyle adapters rollback VERSION`")
