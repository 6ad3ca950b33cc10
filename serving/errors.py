"""Serving errors: each says what went wrong and what to do; the plugin maps them to HTTP statuses."""

from __future__ import annotations

from core.errors import ConflictError, HouseStyleError, InputError


class NoHealthyReplicaError(HouseStyleError):
    """No vLLM replica can take a request right now (plugin: 503 + Retry-After)."""

    def __init__(self, message: str, retry_after_s: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UpstreamError(HouseStyleError):
    """vLLM refused or failed a request; `status_code` is what the plugin should answer (vLLM's 4xx, else 502)."""

    def __init__(self, message: str, status_code: int = 502) -> None:
        super().__init__(message)
        self.status_code = status_code


class FingerprintMismatchError(UpstreamError):
    """A replica answered the probe set unlike the version's recorded fingerprint: it serves other weights under
    the version's name (a swap is refused, a replica serving it is taken out of the pool)."""


class AdapterRejectedError(InputError):
    """An adapter folder failed validation; nothing was loaded and the live version keeps serving."""


class SwapFailedError(ConflictError):
    """Loading a version failed on some replica; it was unloaded everywhere and the live version keeps serving."""


class VllmStartError(HouseStyleError):
    """A managed vLLM server died or timed out while starting; the message carries the log tail."""
