"""Storage adapters: tables, migrations, connections."""

from .connect import database_url, is_sqlite, make_engine
from .migrate import upgrade

__all__ = ["database_url", "is_sqlite", "make_engine", "upgrade"]
