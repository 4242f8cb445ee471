"""Databases as a perflib made before Alembic (revision 0001's schema, frozen in
perflib/store/migrations/baseline.py), made from today's by removing what came later."""
from __future__ import annotations

import sqlalchemy as sa

from perflib.store import schema
from perflib.store.migrations import baseline


def columns_added_after_the_baseline() -> list[tuple[str, str]]:
    """(table, column) of today's schema that revision 0001 lacks: an old database has none."""
    return [(table.name, column.name) for table in schema.metadata.sorted_tables
            for column in table.columns
            if column.name not in baseline.metadata.tables[table.name].columns]


def make_pre_alembic(conn: sa.Connection) -> None:
    """Turn a SQLite database at head into one made before Alembic: no ``alembic_version``, no
    column a later revision added."""
    conn.execute(sa.text("DROP TABLE alembic_version"))
    for table, column in columns_added_after_the_baseline():
        conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {column}"))
