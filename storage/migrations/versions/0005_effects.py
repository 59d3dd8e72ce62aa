"""a table of effects: files and mail touched after the commit that decided them

Revision ID: 0005
Revises: 0004

Writing a review folder, moving an original to the review IMAP folder, filing an answer in Sent
and deleting a purged message's files happened inside or after a transaction, ad hoc: a crash
between the two left a folder for an undecided message or lost the step. Each is now a row,
inserted with the decision and marked done once the step ran.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "effects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=60), nullable=False),
        sa.Column("message_pk", sa.Integer(), nullable=True),
        sa.Column("outbox_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_effects_undone_due", "effects", ["done_at", "due_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_effects_undone_due", table_name="effects")
    op.drop_table("effects")
