"""``performance_alerts`` remembers its delivery to Alertmanager: ``delivery`` (pending,
firing, resolved), ``delivered_severity`` and ``delivered_at`` (all empty on existing rows:
nothing was delivered before).

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # On PostgreSQL the tables live in the schema the connection maps them into.
    schema = op.get_bind().get_execution_options().get("schema_translate_map", {}).get(None)
    for column in (sa.Column("delivery", sa.String(16)),
                   sa.Column("delivered_severity", sa.String(16)),
                   sa.Column("delivered_at", sa.DateTime(timezone=True))):
        op.add_column("performance_alerts", column, schema=schema)
