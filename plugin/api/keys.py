"""API keys for the plugin service: create, list, revoke, and find the key behind a bearer token."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

from sqlalchemy import select
from sqlmodel import Session

from collector.brands import brand_id
from core.errors import InputError, NotFoundError
from core.models import DEFAULT_BRAND_ID, ApiKey, ApiKeyRole, utcnow

KEY_PREFIX = "hs_"


def hash_key(key: str) -> str:
    """sha256 hex of a key: keys carry 256 random bits, so a fast hash is enough to store them safely."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_brands(session: Session, role: ApiKeyRole, slugs: Sequence[str] | None) -> list[int] | None:
    """The brand ids a new key may act on: a widget key exactly one (default: the default brand); agent and admin
    keys the brands named, or every brand (None) when none is named."""
    ids = sorted({brand_id(session, slug) for slug in slugs or ()})
    if role == ApiKeyRole.WIDGET:
        if len(ids) > 1:
            raise InputError("a widget key belongs to exactly one brand (its conversations land there): give one "
                             "--brand")
        return ids or [DEFAULT_BRAND_ID]
    return ids or None


def create_key(
    session: Session, role: ApiKeyRole | str, name: str | None = None, *, brands: Sequence[str] | None = None
) -> tuple[ApiKey, str]:
    """Make a new key (scoped to `brands`, see `key_brands`); returns the stored row and the key itself, which is
    never stored and shown only now."""
    try:
        role = ApiKeyRole(role)
    except ValueError:
        raise InputError(f"unknown role '{role}'; use one of: {', '.join(r.value for r in ApiKeyRole)}") from None
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name or f"{role.value}-key", role=role, key_hash=hash_key(key), prefix=key[:10],
                 brands=key_brands(session, role, brands))
    session.add(row)
    session.flush()
    return row, key


def list_keys(session: Session, *, include_revoked: bool = False) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))  # type: ignore[union-attr]
    return list(session.execute(query).scalars())


def revoke_key(session: Session, key_id: int) -> ApiKey:
    """Stop a key from working; the row stays so listings show who had access."""
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFoundError(f"API key {key_id} does not exist; `housestyle keys list` shows the ids")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        session.flush()
    return row


def find_active_key(session: Session, key: str) -> ApiKey | None:
    """The live key row for a bearer token, or None (unknown or revoked)."""
    digest = hash_key(key)
    row = session.execute(select(ApiKey).where(ApiKey.key_hash == digest)).scalar_one_or_none()
    # the lookup is by hash already; compare again in constant time so timing says nothing about near-misses
    if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at is not None:
        return None
    return row
