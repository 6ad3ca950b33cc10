"""Batch generation through vLLM for evaluation: many prompts at once, greedy, from the base or an adapter.

`VllmReplies` answers trainer.generate.ReplyGenerator's `replies` with vLLM's continuous batching: every prompt is
sent at once through the OpenAI chat API at temperature 0 (vLLM applies the base's own chat template, as training
did), and an adapter is loaded at runtime under a name of its own, unloaded at the end. Losses are not asked of
vLLM: `prompt_logprobs` on a server started with --enable-lora kills the CPU engine in vLLM 0.32 (punica's CPU
logits path mis-sizes its batch), so plugin.evaluation takes them from transformers.
`vllm_replies` gives one on an already-running server (URL + key) or on a short-lived one started for the job.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from core.prompts import Messages
from core.settings import Settings
from serving.errors import UpstreamError
from serving.replicas import Replica
from serving.vllm_server import VllmServer

log = logging.getLogger("housestyle.serving")
T = TypeVar("T")
DEFAULT_CONCURRENCY = 256  # requests in flight; vLLM schedules them into its batch (--max-num-seqs)


class VllmReplies:
    """Greedy replies from one vLLM server; `close()` unloads the adapters it loaded (and stops its own server)."""

    def __init__(self, url: str, api_key: str | None, *, concurrency: int = DEFAULT_CONCURRENCY,
                 server: VllmServer | None = None) -> None:
        # a private event loop on its own thread: callable from plain code and from inside a running loop alike
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="housestyle-vllm-batch", daemon=True)
        self._thread.start()
        self.replica = self._run(self._replica(url, api_key))
        self.concurrency = concurrency
        self.server = server
        self._adapters: dict[Path, str] = {}
        self.base_name = self._run(self.replica.base_model()).id

    async def _replica(self, url: str, api_key: str | None) -> Replica:
        return Replica(url, api_key)

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def replies(self, prompts: list[Messages], *, adapter: Path | None, max_new_tokens: int) -> list[str]:
        model = self._adapter_name(Path(adapter)) if adapter else self.base_name
        return self._run(self._all(model, prompts, max_new_tokens))

    def _adapter_name(self, adapter: Path) -> str:
        adapter = adapter.resolve()
        if adapter not in self._adapters:
            name = f"housestyle-eval-{secrets.token_hex(4)}"
            self._run(self.replica.load_adapter(name, str(adapter)))
            self._adapters[adapter] = name
        return self._adapters[adapter]

    async def _all(self, model: str, prompts: list[Messages], max_new_tokens: int) -> list[str]:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(messages: Messages) -> str:
            async with gate:
                response = await self.replica.request("POST", "/v1/chat/completions", {
                    "model": model, "messages": messages, "temperature": 0, "max_tokens": max_new_tokens,
                })
            choices = response.json().get("choices") or []
            if not choices:
                raise UpstreamError(f"vLLM at {self.replica.url} returned no choices for {model}")
            return (choices[0]["message"].get("content") or "").strip()

        return list(await asyncio.gather(*(one(messages) for messages in prompts)))

    def close(self) -> None:
        try:
            for name in self._adapters.values():
                try:
                    self._run(self.replica.unload_adapter(name))
                except UpstreamError as exc:  # the server may be gone already; nothing else to undo
                    log.warning("could not unload %s: %s", name, exc)
            self._run(self.replica.close())
        finally:
            if self.server is not None:
                self.server.kill()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


@contextmanager
def vllm_replies(settings: Settings, *, base: str | Path, url: str | None = None, api_key: str | None = None,
                 concurrency: int = DEFAULT_CONCURRENCY) -> Iterator[VllmReplies]:
    """Replies from the vLLM at `url` (which must serve `base`), else from a short-lived vLLM on `base`."""
    if url:
        replies = VllmReplies(url, api_key, concurrency=concurrency)
    else:
        server = VllmServer(settings.model_copy(update={"base_model": str(base)}), api_key=secrets.token_hex(16))
        asyncio.run(server.start())
        try:
            replies = VllmReplies(server.url, server.api_key, concurrency=concurrency, server=server)
        except BaseException:
            server.kill()
            raise
    try:
        yield replies
    finally:
        replies.close()
