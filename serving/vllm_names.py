"""The adapter version inside a vLLM name: `hs-<6 hex: the store's tag>-<version>-<6 hex: fresh per load>`.

The names are made by `ServingGateway._new_vllm_name`; this is the one reader of them, for the store's resolver on
each vLLM host and the replicas that ask for a version by name (`tests/test_adapter_store.py` pins the two together).
"""

from __future__ import annotations

import re

from core.registry import VERSION_ID_PATTERN

_VLLM_NAME = re.compile(r"^hs-[0-9a-f]{6}-(?P<version>.+)-[0-9a-f]{6}$")
_VERSION_ID = re.compile(VERSION_ID_PATTERN)


def version_of_vllm_name(vllm_name: str) -> str | None:
    """The version a HouseStyle vLLM name serves, None for any other name (the base, a name loaded from outside)."""
    found = _VLLM_NAME.fullmatch(vllm_name)
    if found is None or not _VERSION_ID.fullmatch(found.group("version")):
        return None
    return found.group("version")
