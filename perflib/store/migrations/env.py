"""Alembic's environment: migrations run on the connection (and in the transaction) that
:mod:`perflib.store.versioning` hands over, on PostgreSQL in the schema that connection maps
its tables into (``schema_translate_map``), where ``alembic_version`` lives too."""
from alembic import context

from perflib.store import schema

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=schema.metadata,
    version_table_schema=connection.get_execution_options()
    .get("schema_translate_map", {}).get(None),
)
with context.begin_transaction():
    context.run_migrations()
