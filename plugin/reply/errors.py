"""Why a reply could not be had: errors of the reply path that say whether the customer's message was kept."""

from __future__ import annotations

from core.errors import HouseStyleError


class ModelServersUnavailable(HouseStyleError):
    """The service runs without a serving gateway (e.g. `--no-vllm` and no vLLM URLs): nothing can generate."""

    retry_after_s = 30.0


class MessageNotStored(HouseStyleError):
    """The store refused to keep a customer's message (full disk, database down): unlike a model outage, nothing
    was kept, so the client must send it again (503, `X-Message-Stored: false`)."""

    retry_after_s = 10.0
    stored = False


class ReplyDelayed(HouseStyleError):
    """The customer's message is stored but no model server can answer now (503, `X-Message-Stored: true`): the
    service drafts the reply once one is back; the client polls the conversation instead of sending it again."""

    stored = True

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
