"""Registry side of promote / rollback / canary: status changes with actor and reason, one transaction each."""

from __future__ import annotations

from collector.db import session_scope
from collector.errors import NotFoundError
from collector.models import DEFAULT_BRAND_ID, AdapterStatus
from collector.registry import adapters_with_status, get_adapter, history, set_status


def adapter_path(version: str, *, database_url: str) -> str:
    with session_scope(database_url) as session:
        return get_adapter(session, version).path


def mark_live(version: str, *, action: str, actor: str, reason: str | None, database_url: str) -> str | None:
    """Make `version` its brand's live version and retire the one before it; returns the retired version."""
    with session_scope(database_url) as session:
        brand = get_adapter(session, version).brand_id
        previous = [adapter.version for adapter in adapters_with_status(session, AdapterStatus.LIVE, brand)]
        for old in previous:
            if old != version:
                # kept on disk either way; "rolled-back" tells the timeline it was taken off, not just superseded
                retire, why = ("rolled-back", "rolled back to") if action == "rollback" else ("retire", "replaced by")
                set_status(session, old, AdapterStatus.RETIRED, action=retire, actor=actor, reason=f"{why} {version}")
        set_status(session, version, AdapterStatus.LIVE, action=action, actor=actor, reason=reason)
    others = [old for old in previous if old != version]
    return others[0] if others else None


def mark_canary(
    version: str, share: float, *, actor: str, reason: str | None, database_url: str
) -> str | None:
    """Make `version` its brand's one canary with `share`; a previous canary goes back to candidate. Returns it."""
    with session_scope(database_url) as session:
        brand = get_adapter(session, version).brand_id
        previous = [adapter.version for adapter in adapters_with_status(session, AdapterStatus.CANARY, brand)]
        for old in previous:
            if old != version:
                set_status(session, old, AdapterStatus.CANDIDATE, action="canary-end", actor=actor,
                           reason=f"replaced by {version}")
        set_status(session, version, AdapterStatus.CANARY, action="canary", actor=actor, reason=reason,
                   canary_share=share)
    others = [old for old in previous if old != version]
    return others[0] if others else None


def end_canary(version: str, *, actor: str, reason: str | None, database_url: str) -> None:
    with session_scope(database_url) as session:
        set_status(session, version, AdapterStatus.CANDIDATE, action="canary-end", actor=actor, reason=reason)


def mark_rejected(version: str, *, actor: str, reason: str, database_url: str) -> None:
    with session_scope(database_url) as session:
        set_status(session, version, AdapterStatus.REJECTED, action="reject", actor=actor, reason=reason)


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
    """The version that was live before `current` in its brand (the newest promote/rollback of another version)."""
    with session_scope(database_url) as session:
        for event in history(session, limit=10_000, brand_id=brand_id):
            if event.action in ("promote", "rollback") and event.version != current:
                return event.version
    raise NotFoundError("there is no earlier live version to roll back to; name one: `housestyle adapters rollback VERSION`")
