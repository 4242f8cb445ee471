"""``perflib_schema_info`` goes: ``alembic_version`` says which schema a database has.

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("perflib_schema_info")
