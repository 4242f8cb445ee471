"""The schema as Alembic found it (perflib c9cd00a): every table of
:mod:`perflib.store.migrations.baseline`, on PostgreSQL with the three job tables partitioned by
day (:mod:`perflib.store.partitions`; an older unpartitioned database keeps its plain tables
until ``perflib migrate-partitions``).

Revision ID: 0001
Revises: none
"""
from alembic import op

from perflib.store import partitions
from perflib.store.migrations import baseline

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    tables = baseline.metadata.sorted_tables
    if bind.dialect.name == "postgresql":
        job_tables = {name: baseline.metadata.tables[name] for name in partitions.PARTITION_KEYS}
        partitions.create_tables(bind, tables=job_tables)
        tables = [table for table in tables if table.name not in job_tables]
    baseline.metadata.create_all(bind, tables=tables)
