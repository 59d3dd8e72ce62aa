"""claim work in order from an index, however long the backlog; find an application's messages

Revision ID: 0003
Revises: 0002

Messages are claimed oldest arrival first and answers earliest due first. With an index on the
state alone, every claim read and sorted the whole backlog (10,000 received messages are sorted
again for each handful claimed); with the order in the index, a claim reads only the rows it takes.
A decision reads the earlier messages of the applications its clues point to: by index, not by
reading the call's messages.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_state")
        batch_op.create_index("ix_messages_state_arrival", ["state", "arrival", "id"], unique=False)
        batch_op.create_index("ix_messages_application", ["application_id"], unique=False)
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_state")
        batch_op.create_index("ix_outbox_state_due", ["state", "next_attempt_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_state_due")
        batch_op.create_index("ix_outbox_state", ["state"], unique=False)
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_application")
        batch_op.drop_index("ix_messages_state_arrival")
        batch_op.create_index("ix_messages_state", ["state"], unique=False)
