"""count answers per mailbox, per domain and overall, by index

Revision ID: 0004
Revises: 0003

The limits on automatic answers count one mailbox under all its spellings (case, +tag, Gmail's
dots) and every answer of a sender domain, of the last hour and of the last day: each count reads
an index, not the outbox. Earlier rows get their key from the address as written.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("to_key", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("to_domain", sa.String(length=255), nullable=True))
        batch_op.create_index("ix_outbox_key_created", ["to_key", "created_at"], unique=False)
        batch_op.create_index("ix_outbox_domain_created", ["to_domain", "created_at"], unique=False)
        batch_op.create_index("ix_outbox_created", ["created_at", "kind", "state"], unique=False)
    op.execute("UPDATE outbox SET to_key = lower(to_addr) WHERE to_addr IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_created")
        batch_op.drop_index("ix_outbox_domain_created")
        batch_op.drop_index("ix_outbox_key_created")
        batch_op.drop_column("to_domain")
        batch_op.drop_column("to_key")
