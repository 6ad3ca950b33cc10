"""ORM objects for rows written with SQLAlchemy Core: the live recorder writes with Core statements and still hands
its callers the same persistent objects a flush would have, without the unit of work's cost.

Building a SQLModel table object through its constructor costs ~0.25 ms and a flush of one object ~0.4 ms; a
Core statement costs ~0.05 ms. `loaded` builds the object the way the ORM does when it loads a row (no
constructor, values set as committed) and puts it in the session's identity map: while it is referenced,
`session.get` finds it without SQL (the map holds unchanged objects weakly), a change to it is flushed as an
UPDATE, and nothing is written twice.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

from pydantic_core import PydanticUndefined
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, configure_mappers, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key
from sqlmodel import SQLModel

Model = TypeVar("Model", bound=SQLModel)


@cache
def _column_defaults(model: type[SQLModel]) -> tuple[tuple[str, Any, Callable[[], Any] | None], ...]:
    """(attribute, default, default factory) of every column of a table model but its primary key."""
    fields = model.model_fields
    defaults = []
    for column in model.__table__.columns:  # type: ignore[attr-defined]
        if column.primary_key:
            continue
        field = fields[column.key]
        default = None if field.default is PydanticUndefined else field.default
        defaults.append((column.key, default, field.default_factory))
    return tuple(defaults)


def with_defaults(model: type[SQLModel], **values: Any) -> dict[str, Any]:
    """Every column of a new row: `values`, else the model's default, as the model's constructor would fill it (a
    column added to the model later is written too, with its default)."""
    row = {}
    for key, default, factory in _column_defaults(model):
        if key in values:
            row[key] = values[key]
        else:
            row[key] = factory() if factory is not None else default
    return row


@cache
def _class_manager(model: type[SQLModel]) -> Any:
    """What the ORM builds a model's objects with, once its mappers are configured (queries do that on first use)."""
    configure_mappers()
    return model.__mapper__.class_manager  # type: ignore[attr-defined]


def writing(session: Session) -> Connection:
    """The session's connection for Core writes, after flushing what the caller added to the session (an object
    added but not flushed yet must count, e.g. for the next transcript position)."""
    session.flush()
    return session.connection()


def loaded(session: Session, model: type[Model], values: dict[str, Any]) -> Model:
    """The row `values` (primary key included) as a persistent `model` object in `session`, as if just loaded."""
    instance = _class_manager(model).new_instance()
    # what the ORM's loader does with a fetched row: the values go straight into the fresh instance's __dict__, with
    # nothing expired and no change recorded (set_committed_value per attribute cost ~2.5 µs each, 50 a conversation)
    instance.__dict__.update(values)
    make_transient_to_detached(instance)
    session.add(instance)  # detached with an identity: becomes persistent, no SQL
    return instance


def refresh_loaded(session: Session, model: type[SQLModel], primary_key: Any, **values: Any) -> None:
    """Tell the object the session already holds for this row (if any) what a Core UPDATE changed in it."""
    instance = session.identity_map.get(identity_key(model, primary_key))
    if instance is not None:
        for key, value in values.items():
            set_committed_value(instance, key, value)


def forget_loaded(session: Session, model: type[SQLModel], primary_key: Any) -> None:
    """Make the session read this row again the next time it is asked for (a Core statement found it changed)."""
    instance = session.identity_map.get(identity_key(model, primary_key))
    if instance is not None:
        session.expire(instance)


def held_or_loaded(session: Session, model: type[Model], values: dict[str, Any]) -> Model:
    """The session's object for this row brought up to `values` (a full row a Core statement returned), else the row
    loaded as a new persistent object: either way, while it is referenced, `session.get` finds it without SQL."""
    instance = session.identity_map.get(identity_key(model, values["id"]))
    if instance is None:
        return loaded(session, model, values)
    state = inspect(instance)
    if state.expired_attributes or state.modified:
        for key, value in values.items():
            set_committed_value(instance, key, value)
    else:  # nothing expired or changed (the caller flushed): the committed values are the __dict__
        instance.__dict__.update(values)
    return instance
