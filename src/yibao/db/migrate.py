"""Running the Alembic migrations programmatically (``yibao db upgrade``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

__all__ = ["alembic_config", "upgrade"]

_HERE = Path(__file__).parent


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE / "migrations"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision``; safe to run repeatedly."""
    config = alembic_config()
    # DDL runs in a plain (deferred) transaction: SQLite's BEGIN IMMEDIATE is for data writes.
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        connection.commit()
