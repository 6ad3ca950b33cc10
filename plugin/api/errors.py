"""Turning exceptions into HTTP answers: user-fixable errors keep their message, anything else is a generic 500."""

from __future__ import annotations

import json
import logging
import math

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from core.errors import ConflictError, HouseStyleError, InputError, NotFoundError, StoreError

log = logging.getLogger("housestyle.errors")

STORED_HEADER = "X-Message-Stored"  # on errors that say whether a customer's message was kept (plugin.reply.errors)

STATUS_BY_ERROR: dict[type[HouseStyleError], int] = {
    InputError: 422,
    NotFoundError: 404,
    ConflictError: 409,
    StoreError: 503,
}


def _retry_after(exc: Exception, default: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(getattr(exc, "retry_after_s", default))))}


def status_for(exc: HouseStyleError) -> int:
    """The HTTP status of a user-fixable error: serving's own code if it has one, else by its collector class."""
    code = getattr(exc, "status_code", None)
    if isinstance(code, int):
        return code
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    if hasattr(exc, "retry_after_s"):
        return 503
    return 400


async def house_style_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HouseStyleError)
    status = status_for(exc)
    headers = _retry_after(exc, request.app.state.settings.retry_after_seconds) if status == 503 else None
    if hasattr(exc, "stored"):  # a customer's message: say whether it was kept, so a client knows to resend or wait
        headers = {**(headers or {}), STORED_HEADER: "true" if exc.stored else "false"}
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: a lone surrogate echoed from a bad body stays valid JSON."""

    def render(self, content: object) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 body (`detail`: the list of problems), safe for any input it echoes."""
    assert isinstance(exc, RequestValidationError)
    return AsciiJSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # the traceback goes to the server log only; the client learns nothing about our internals
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error; the server log has the details"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HouseStyleError, house_style_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(Exception, unexpected_error)
