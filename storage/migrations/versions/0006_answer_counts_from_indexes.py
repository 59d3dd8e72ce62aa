"""the per-mailbox and per-domain answer counts read their indexes alone

Revision ID: 0006
Revises: 0005

The limits on automatic answers count, for every answer, the answers of the last day to the same
mailbox and to the same domain that were not withheld. Their indexes held the recipient and the
time but not the kind and the state, so each counted answer was looked up in the table, and an
outbox row carries the answer's bytes before those columns: SQLite walks a row's overflow pages to
reach them. During a rush from a few large institutions that is most of the day's answers, again
for each new one. With kind and state in the index the count never touches the table.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COUNTED_BY = {"ix_outbox_key_created": "to_key", "ix_outbox_domain_created": "to_domain"}


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        for name, column in COUNTED_BY.items():
            batch_op.drop_index(name)
            batch_op.create_index(name, [column, "created_at", "kind", "state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        for name, column in COUNTED_BY.items():
            batch_op.drop_index(name)
            batch_op.create_index(name, [column, "created_at"], unique=False)
