"""Alembic environment: always driven by yibao.db.migrate with a live connection."""

from __future__ import annotations

from alembic import context

from yibao.db.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `yibao db upgrade`")
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
