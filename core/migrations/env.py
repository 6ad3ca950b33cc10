"""Alembic environment: runs the collector's migrations on the connection `core.db.upgrade` hands in."""

from alembic import context
from sqlalchemy import create_engine
from sqlmodel import SQLModel

from core import (
    knowledge_models,  # noqa: F401  (and the knowledge base's)
    models,  # noqa: F401  (registers the tables on SQLModel.metadata)
)

target_metadata = SQLModel.metadata
config = context.config


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # called from the alembic CLI: open our own connection
        with create_engine(config.attributes["url"]).begin() as own:
            context.configure(connection=own, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
        return
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
