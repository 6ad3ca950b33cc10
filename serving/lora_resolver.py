"""vLLM's side of the adapter store: a LoRA resolver that serves a HouseStyle version only from a checked copy.

vLLM loads it through the `vllm.general_plugins` entry point (pyproject.toml) in each of its processes; it registers
only where HOUSESTYLE_ADAPTER_STORE is set in that process's environment. A request naming a model vLLM does not
know (VLLM_ALLOW_RUNTIME_LORA_UPDATING on) asks the resolvers: this one maps a HouseStyle name to its version,
fetches `<store>/<version>/` into HOUSESTYLE_ADAPTER_CACHE_DIR, checks it (`core.adapter_store.fetch_verified`) and
only then returns what vLLM loads. A check that fails returns nothing (vLLM answers 404) and logs one line.
"""

from __future__ import annotations

import asyncio
import logging

from vllm.lora.request import LoRARequest
from vllm.lora.resolver import LoRAResolver, LoRAResolverRegistry

from core.adapter_store import AdapterStore, AdapterStoreError, open_adapter_store
from core.settings import Settings
from serving.vllm_names import version_of_vllm_name

RESOLVER_NAME = "HouseStyle adapter store"
log = logging.getLogger("vllm.housestyle.lora_resolver")  # under vLLM's logger: its handler and format


class AdapterStoreResolver(LoRAResolver):
    """Resolves `hs-...-<version>-...` names from the adapter store, checksums checked on this host."""

    def __init__(self, store: AdapterStore) -> None:
        self.store = store

    async def resolve_lora(self, base_model_name: str, lora_name: str) -> LoRARequest | None:
        version = version_of_vllm_name(lora_name)
        if version is None:
            return None  # not a HouseStyle name: another resolver's, or nobody's
        try:
            folder = await asyncio.to_thread(self.store.fetch_verified, version)
        except AdapterStoreError as exc:
            log.error("HouseStyle adapter store: not serving %s: %s", lora_name, exc)
            return None
        # vLLM sets the id it uses itself (resolve_lora's counter); this one only has to be a positive int
        return LoRARequest(lora_name=lora_name, lora_int_id=1, lora_path=str(folder))


def register() -> None:
    """The entry point: register the resolver when this vLLM process has an adapter store configured."""
    store = open_adapter_store(Settings())
    if store is not None:
        LoRAResolverRegistry.register_resolver(RESOLVER_NAME, AdapterStoreResolver(store))
