"""Which brand a request acts on, and whether the caller's key may: one check every route calls.

A key names the brands it may act on (`ApiKey.brands`; None: every brand). A brand the key may not act on answers
exactly like a brand that does not exist (404), so a key cannot even learn another brand's name.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from threading import Lock
from typing import Annotated

from fastapi import Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from collector.brands import list_brands, settings_for
from core.db import session_scope
from core.errors import InputError, NotFoundError
from core.models import DEFAULT_BRAND_ID
from core.settings import Settings
from plugin.api.deps import Caller, authenticate

MIN_RELOAD_S = 1.0  # a key naming a brand not known yet re-reads the brands at once, at most this often

BRAND_QUERY = Query(max_length=50, description="The brand's name (`housestyle brands list`); default: the "
                    "key's only brand, or the default brand for a key of every brand.")


@dataclass(frozen=True)
class BrandEntry:
    """One brand as the service sees it: its id, name and settings (the installation's with the brand's over them)."""

    id: int
    slug: str
    settings: Settings

    @property
    def public_model_name(self) -> str:
        return self.settings.public_model_name


class BrandDirectory:
    """Every brand, re-read from the store at most every `ttl_s` (a brand made by the CLI appears within that)."""

    def __init__(self, settings: Settings, ttl_s: float = 5.0, gateway: object | None = None) -> None:
        self.settings, self.ttl_s, self.gateway = settings, ttl_s, gateway
        self._entries: dict[int, BrandEntry] = {}
        self._loaded_at = -float("inf")
        self._missing: set[int] = set()  # brand ids a key named that the last read did not find (deleted brands)
        self._lock = Lock()

    def fresh(self) -> bool:
        return time.monotonic() - self._loaded_at < self.ttl_s

    def load(self, wanted: Iterable[int] = ()) -> dict[int, BrandEntry]:
        """Read the brands now unless read within `ttl_s`, or `wanted` names a brand not known (and not found missing
        by a read in the last `MIN_RELOAD_S`); blocking: call it in a worker thread from async code."""
        with self._lock:
            age = time.monotonic() - self._loaded_at
            unknown = {brand_id for brand_id in wanted if brand_id not in self._entries}
            if age >= self.ttl_s or (unknown - self._missing) or (unknown and age >= MIN_RELOAD_S):
                with session_scope(self.settings.resolved_database_url) as session:
                    entries = {int(b.id): BrandEntry(int(b.id), b.slug, settings_for(self.settings, b))
                               for b in list_brands(session)}
                routes = getattr(self.gateway, "routes", None)
                for entry in entries.values():  # a brand made since the gateway started gets its public name
                    if routes is not None:
                        routes.name_brand(entry.id, entry.public_model_name)
                self._entries, self._loaded_at = entries, time.monotonic()
                self._missing = {brand_id for brand_id in unknown if brand_id not in entries}
            return self._entries

    async def entries(self, wanted: Iterable[int] | None = None) -> dict[int, BrandEntry]:
        """The brands; `wanted`: the brand ids a caller's key names, and one not known yet (a brand made since the
        last read, e.g. by `housestyle brands create` or another instance) reads the store again at once."""
        unknown = [brand_id for brand_id in wanted or () if brand_id not in self._entries]
        if self.fresh() and not unknown:
            return self._entries
        return await run_in_threadpool(self.load, unknown)


def not_found(slug: str) -> NotFoundError:
    return NotFoundError(f"brand {slug!r} does not exist or this key may not act on it; GET /me lists the key's "
                         "brands")


def pick_brand(entries: dict[int, BrandEntry], caller: Caller, slug: str | None) -> BrandEntry:
    """The brand a request names (or the caller's default), refused as missing when the key may not act on it."""
    if slug is None:
        if caller.brands is None:
            return entries[DEFAULT_BRAND_ID]
        if len(caller.brands) == 1:
            if caller.brands[0] not in entries:  # deleted since the key was made
                raise NotFoundError("this key's brand does not exist any more; ask an admin for a key of a brand")
            return entries[caller.brands[0]]
        names = ", ".join(sorted(entries[i].slug for i in caller.brands if i in entries))
        raise InputError(f"this key acts on several brands ({names}): name one with ?brand=NAME")
    entry = next((e for e in entries.values() if e.slug == slug), None)
    if entry is None or not caller.may_act_on(entry.id):
        raise not_found(slug)
    return entry


def visible_brands(entries: dict[int, BrandEntry], caller: Caller) -> list[BrandEntry]:
    """The brands this key may see and act on, in id order."""
    return [entry for brand_id, entry in sorted(entries.items()) if caller.may_act_on(brand_id)]


async def get_directory(request: Request) -> BrandDirectory:
    return request.app.state.brands


DirectoryDep = Annotated[BrandDirectory, Depends(get_directory)]


async def chosen_brand(
    directory: DirectoryDep, caller: Annotated[Caller, Depends(authenticate)],
    brand: Annotated[str | None, BRAND_QUERY] = None,
) -> BrandEntry:
    return pick_brand(await directory.entries(caller.brands), caller, brand)


async def brand_filter(
    directory: DirectoryDep, caller: Annotated[Caller, Depends(authenticate)],
    brand: Annotated[str | None, BRAND_QUERY] = None,
) -> list[int] | None:
    """For lists: the brand named, else every brand the key may act on (None: no filter, a key of every brand)."""
    entries = await directory.entries(caller.brands)
    if brand is not None:
        return [pick_brand(entries, caller, brand).id]
    return None if caller.brands is None else list(caller.brands)


ChosenBrand = Annotated[BrandEntry, Depends(chosen_brand)]
BrandFilter = Annotated[list[int] | None, Depends(brand_filter)]
