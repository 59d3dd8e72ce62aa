"""find earlier forms by name and institution together

Revision ID: 0002
Revises: 0001

A name alone matches nobody (the rules need the same name at the same institution), and common
names are shared by many applicants: an index on the name only made the lookup of earlier forms
read every namesake's messages.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_call_name")
        batch_op.create_index(
            "ix_messages_call_name_place", ["call_id", "person_name_key", "person_institution_key"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_call_name_place")
        batch_op.create_index("ix_messages_call_name", ["call_id", "person_name_key"], unique=False)
