"""Migrations: the chain's head on both databases, and the last step down and up again."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine, text

from yibao.db.migrate import alembic_config, upgrade


def _compression(db: Engine) -> str:
    with db.connect() as conn:
        return str(
            conn.execute(
                text(
                    "SELECT attcompression FROM pg_attribute"
                    " WHERE attrelid = 'settlements'::regclass AND attname = 'result_json'"
                )
            ).scalar_one()
        )


def test_documents_compression_steps_down_and_up(db: Engine) -> None:
    config = alembic_config()
    with db.connect() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
        conn.commit()
    if db.dialect.name == "postgresql":
        assert _compression(db) in ("p", "")  # pglz, or the server default
    upgrade(db)
    with db.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0004"
    if db.dialect.name == "postgresql":
        assert _compression(db) == "l"  # lz4 (this project's server is built with it)
