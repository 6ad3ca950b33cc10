"""Changing the live version from outside the service: through a running `housestyle serve`, else in the registry."""

from __future__ import annotations

from collector.brands import brand_id, brand_id_of
from core import registry
from core.db import session_scope
from core.errors import ConflictError, InputError
from core.registry import check_version_id
from core.settings import Settings
from serving.control import AdminClient, read_control_file
from serving.validation import validate_adapter

NEXT_START = "the next `housestyle serve` loads it"


def running_service(settings: Settings) -> AdminClient | None:
    """A client for the `housestyle serve` running on this HOUSESTYLE_HOME, if one is."""
    control = read_control_file(settings)
    return AdminClient(control) if control else None


def validate_offline(version: str, *, actor: str, settings: Settings) -> None:
    """Without a running service, still refuse adapters that the next `serve` would refuse."""
    url = settings.resolved_database_url
    try:
        validate_adapter(registry.adapter_path(version, database_url=url),
                         served_base_model=settings.resolved_base_model, max_lora_rank=settings.max_lora_rank)
    except InputError as exc:
        registry.mark_rejected(version, actor=actor, reason=str(exc), database_url=url)
        raise


def check_brand_of(version: str, brand: str | None, settings: Settings) -> int:
    """The version's brand id; with `brand` named (--brand), the version must be that brand's."""
    url = settings.resolved_database_url
    owner = registry.brand_of(version, database_url=url)
    if brand is not None:
        with session_scope(url) as session:
            wanted = brand_id(session, brand)
        if owner != wanted:
            raise InputError(f"{version} is not a version of brand {brand!r}; `housestyle adapters list --brand "
                             f"{brand}` shows its versions")
    return owner


def promote_version(version: str, *, actor: str, reason: str | None, settings: Settings,
                    brand: str | None = None) -> str:
    """Make `version` live in its brand; returns once every replica serves it (or the registry says so). One-line
    summary."""
    check_version_id(version)
    owner = check_brand_of(version, brand, settings)
    admin = running_service(settings)
    if admin:
        result = admin.promote(version, actor, reason)
        return f"{version} is live on {len(result['replicas'])} replica(s); previous: {result['previous'] or 'base model'}"
    url = settings.resolved_database_url
    validate_offline(version, actor=actor, settings=settings)
    if registry.registry_live_version(database_url=url, brand_id=owner) == version:
        raise ConflictError(f"{version} is already live")
    previous = registry.mark_live(version, action="promote", actor=actor, reason=reason, database_url=url)
    return f"{version} is live in the registry (previous: {previous or 'base model'}); no service is running, {NEXT_START}"


def rollback_version(version: str | None, *, actor: str, reason: str | None, settings: Settings) -> str:
    """Go back to the brand's (HOUSESTYLE_BRAND, --brand) previous live version, or to any kept `version` of it."""
    url = settings.resolved_database_url
    brand = brand_id_of(settings)
    if version is not None:
        check_version_id(version)
        check_brand_of(version, settings.brand, settings)
    admin = running_service(settings)
    if admin:
        result = admin.rollback(version, actor, reason, brand=settings.brand)
        return f"rolled back: {result['version']} is live (was {result['previous'] or 'base model'})"
    current = registry.registry_live_version(database_url=url, brand_id=brand)
    version = version or registry.previous_live_version(current, database_url=url, brand_id=brand)
    if version == current:
        raise ConflictError(f"{version} is already live")
    validate_offline(version, actor=actor, settings=settings)
    registry.mark_live(version, action="rollback", actor=actor, reason=reason, database_url=url)
    return f"rolled back: {version} is live in the registry (was {current or 'base model'}); {NEXT_START}"


def canary_version(version: str, share: float, *, actor: str, reason: str | None, settings: Settings,
                   brand: str | None = None) -> str:
    """Route `share` of new conversations of the version's brand to `version` (0 ends its canary)."""
    check_version_id(version)
    if not 0.0 <= share <= 1.0:
        raise InputError(f"--share {share} is not between 0 and 1; use e.g. --share 0.1")
    owner = check_brand_of(version, brand, settings)
    url = settings.resolved_database_url
    admin = running_service(settings)
    if admin:
        admin.canary(version, share, actor, reason)
    elif share == 0.0:
        canary = registry.registry_canary(database_url=url, brand_id=owner)
        if canary is None or canary[0] != version:
            raise ConflictError(f"{version} is not the canary; nothing to end")
        registry.end_canary(version, actor=actor, reason=reason, database_url=url)
    else:
        if registry.registry_live_version(database_url=url, brand_id=owner) == version:
            raise ConflictError(f"{version} is already live; a canary must be another version")
        validate_offline(version, actor=actor, settings=settings)
        registry.mark_canary(version, share, actor=actor, reason=reason, database_url=url)
    where = "on the running service" if admin else "in the registry (the next `housestyle serve` applies it)"
    return f"canary ended for {version} {where}" if share == 0.0 else f"{version} gets {share:.0%} of new conversations {where}"
