"""Brands: several house styles in one store, each with its own company, voice, public model name, adapter lineage,
keys, conversations, gate and refresh schedule.

A brand's settings are the installation's (`Settings`, HOUSESTYLE_*) with the brand's own values over them
(`settings_for`), so everything that takes `Settings` (the prompt builder, the export, the gate, the refresh) works
per brand unchanged. The default brand has every value unset: one brand looks exactly like no brands.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select
from sqlmodel import Session

from collector.formats import first_problem
from collector.sample import GOLDEN_PATH
from core.db import open_store, session_scope
from core.errors import ConflictError, InputError, NotFoundError
from core.models import DEFAULT_BRAND, Brand
from core.settings import Settings, get_settings

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,49}$")
# what a brand may set; None leaves the installation's value
OVERRIDES = ("company_name", "system_prompt", "public_model_name", "golden_path", "gate_min_chrf_gain",
             "gate_min_loss_gain", "gate_golden_tolerance", "refresh_interval_minutes", "refresh_min_new_reviews",
             "refresh_canary_share")


class BrandFields(BaseModel):
    """What `housestyle brands create|update` and the admin API may set on a brand."""

    company_name: str | None = Field(None, min_length=1, max_length=200)
    system_prompt: str | None = Field(None, min_length=1, max_length=8000)
    public_model_name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
    golden_path: str | None = None
    gate_min_chrf_gain: float | None = None
    gate_min_loss_gain: float | None = None
    gate_golden_tolerance: float | None = Field(None, ge=0)
    refresh_interval_minutes: float | None = Field(None, gt=0)
    refresh_min_new_reviews: int | None = Field(None, ge=1)
    refresh_canary_share: float | None = Field(None, ge=0, le=1)


def brand_fields(**given: Any) -> BrandFields:
    """BrandFields from what a user typed; a bad value is an InputError naming the field."""
    try:
        return BrandFields(**given)
    except ValidationError as exc:
        field = ".".join(str(part) for part in exc.errors(include_url=False)[0]["loc"])
        raise InputError(f"{field}: {first_problem(exc)}") from None


def check_slug(slug: str) -> str:
    if not SLUG.fullmatch(slug or ""):
        raise InputError(f"brand {slug!r} is not a brand name: use 1-50 lower-case letters, digits and '-', "
                         "e.g. gadgetcorp-business")
    return slug


def get_brand(session: Session, slug: str) -> Brand:
    brand = session.execute(select(Brand).where(Brand.slug == slug)).scalar_one_or_none()
    if brand is None:
        raise NotFoundError(f"brand {slug!r} does not exist; `housestyle brands list` shows them, "
                            "`housestyle brands create` makes one")
    return brand


def brand_id(session: Session, slug: str) -> int:
    return int(get_brand(session, slug).id)


def brand_id_of(settings: Settings, session: Session | None = None) -> int:
    """The id of the brand `settings` are for: carried by settings from `settings_for` (no query), else looked up in
    `session` or in a session of their store (settings made without `collector.brands`, e.g. `get_settings()`)."""
    if settings.brand_id is not None:
        return settings.brand_id
    if session is not None:
        return brand_id(session, settings.brand)
    with session_scope(settings.resolved_database_url) as own:
        return brand_id(own, settings.brand)


def list_brands(session: Session) -> list[Brand]:
    return list(session.execute(select(Brand).order_by(Brand.id)).scalars())


def brand_slugs(session: Session) -> dict[int, str]:
    return dict(session.execute(select(Brand.id, Brand.slug)).all())


def _check_golden(path: str | None) -> None:
    if path is not None and not Path(path).expanduser().is_file():
        raise InputError(f"golden set {path} does not exist; give a JSONL file of {{\"messages\": [...]}} lines")


def create_brand(session: Session, slug: str, fields: BrandFields, *, settings: Settings) -> Brand:
    """A new brand; its public model name defaults to `<slug>-assistant` and its prompt names its company."""
    check_slug(slug)
    if session.execute(select(Brand.id).where(Brand.slug == slug)).first():
        raise ConflictError(f"brand {slug!r} exists already; change it with `housestyle brands update {slug}`")
    if not fields.company_name:
        raise InputError("a new brand needs its company name: --company 'GadgetCorp Business'")
    _check_golden(fields.golden_path)
    values = fields.model_dump()
    values["public_model_name"] = values["public_model_name"] or f"{slug}-assistant"
    values["system_prompt"] = values["system_prompt"] or (
        f"You are a helpful customer support assistant for '{values['company_name']}'.")
    _check_public_name(session, values["public_model_name"], settings, slug)
    brand = Brand(slug=slug, **values)
    session.add(brand)
    session.flush()
    return brand


def update_brand(session: Session, slug: str, fields: BrandFields, *, settings: Settings) -> Brand:
    """Set the given fields (the ones left out stay as they are)."""
    brand = get_brand(session, slug)
    changes = fields.model_dump(exclude_unset=True)
    _check_golden(changes.get("golden_path"))
    if changes.get("public_model_name"):
        _check_public_name(session, changes["public_model_name"], settings, slug)
    for name, value in changes.items():
        setattr(brand, name, value)
    session.add(brand)
    session.flush()
    return brand


def _check_public_name(session: Session, name: str, settings: Settings, slug: str) -> None:
    """Each brand answers behind its own public model name; the default brand's is HOUSESTYLE_PUBLIC_MODEL_NAME."""
    taken = {b.slug: settings_for(settings, b).public_model_name for b in list_brands(session)}
    clash = [other for other, public in taken.items() if public == name and other != slug]
    if clash:
        raise ConflictError(f"public model name {name!r} is brand {clash[0]!r}'s; give this brand its own")


def settings_for(settings: Settings, brand: Brand) -> Settings:
    """The installation's settings with the brand's own values over them (and `brand` naming it, with its id)."""
    values: dict[str, Any] = {name: getattr(brand, name) for name in OVERRIDES if getattr(brand, name) is not None}
    golden = values.pop("golden_path", None)
    values["golden_set"] = golden or settings.golden_set or (str(GOLDEN_PATH) if brand.slug == DEFAULT_BRAND else None)
    resolved = settings.model_copy(update={**values, "brand": brand.slug})
    return resolved.with_brand_id(brand.id) if brand.id is not None else resolved  # a brand not stored yet has none


def brand_settings(settings: Settings, session: Session, slug: str | None = None) -> Settings:
    """`settings_for` the brand named (default: HOUSESTYLE_BRAND, i.e. the default brand)."""
    return settings_for(settings, get_brand(session, slug or settings.brand))


def every_brand(settings: Settings, session: Session) -> list[Settings]:
    return [settings_for(settings, brand) for brand in list_brands(session)]


def entry_settings(brand: str | None = None) -> Settings:
    """For entry points (CLI commands): this process's settings, with their store opened, for `brand` (a --brand;
    default HOUSESTYLE_BRAND): the brand's own company, prompt, public name, gate and schedule over the rest."""
    settings = get_settings()
    open_store(settings.resolved_database_url)
    with session_scope(settings.resolved_database_url) as session:
        return brand_settings(settings, session, brand)
