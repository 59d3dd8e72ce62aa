"""The earlier forms a decision compares a new one with, as the rules see them (``PriorApplication``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from mailbot.decision import APPLICATION_OUTCOMES, Outcome, PriorApplication
from mailbot.identity import Identity
from storage.earlier_forms import earlier_forms

# the outcomes of forms that belong to an application (a later form may be the same person's)
_COUNTED = frozenset(outcome.value for outcome in APPLICATION_OUTCOMES)


def load_priors(
    session: Session, call_id: str, before: datetime, exclude_pk: int, probe: Identity | None, form_sha256: str | None
) -> list[PriorApplication]:
    """Earlier readable forms of this call that could be the same person as ``probe`` (cut as stored)."""
    if probe is None:
        return []
    rows = earlier_forms(
        session,
        call_id,
        before,
        exclude_pk,
        _COUNTED,
        email=probe.email,
        phone=probe.phone,
        name_key=probe.name_key,
        institution_key=probe.institution_key,
        form_sha256=form_sha256,
    )
    return [
        PriorApplication(
            message_key=row.message_key,
            arrival=row.arrival,
            outcome=Outcome(row.outcome),
            identity=Identity(row.person_email, row.person_phone, row.person_name_key, row.person_institution_key),
            project_title=row.project_title,
            form_sha256=row.form_sha256,
            application_key=row.application_key,
            reference=row.reference,
        )
        for row in rows
    ]
