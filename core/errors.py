"""Errors a user can fix: each message says what went wrong and what to do about it."""


class HouseStyleError(Exception):
    """Base for every error shown to a user as one line (CLI) or a JSON `detail` (HTTP)."""


class StoreError(HouseStyleError):
    """The conversation store cannot be reached, or its URL is wrong."""


class InputError(HouseStyleError):
    """A file or argument the user gave us is not usable."""


class NotFoundError(HouseStyleError):
    """A thing the user named (conversation, draft, version) does not exist."""


class ConflictError(HouseStyleError):
    """The request clashes with the current state (already reviewed, claimed by someone else, ...)."""
