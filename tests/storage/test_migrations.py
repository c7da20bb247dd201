"""Migrations: the chain's head on both databases, and the last step down and up again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from yibao.db.migrate import alembic_config, upgrade
from yibao.db.schema import metadata


def _documents(db: Engine) -> tuple[str, list[str] | None]:
    """(compression of settlements.result_json, the table's storage options)."""
    with db.connect() as conn:
        compression = conn.execute(
            text(
                "SELECT attcompression FROM pg_attribute"
                " WHERE attrelid = 'settlements'::regclass AND attname = 'result_json'"
            )
        ).scalar_one()
        options = conn.execute(text("SELECT reloptions FROM pg_class WHERE oid = 'settlements'::regclass")).scalar_one()
        return str(compression), options


def _head() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def test_documents_compression_steps_down_and_up(db: Engine) -> None:
    config = alembic_config()
    with db.connect() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")  # through every later revision, 0006, 0005 and 0004 among them
        conn.commit()
    if db.dialect.name == "postgresql":
        compression, options = _documents(db)
        assert compression in ("p", "") and options is None  # pglz (or the server default), default target
    upgrade(db)
    with db.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == _head()
    if db.dialect.name == "postgresql":
        # lz4 (this project's server has it), compressed in the row
        assert _documents(db) == ("l", ["toast_tuple_target=8160"])


def test_tables_match_the_migrations(db: Engine) -> None:
    """schema.py (what the code uses) and the migrations (what databases get) describe the same tables."""
    with db.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []
