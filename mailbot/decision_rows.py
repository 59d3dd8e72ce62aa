"""What a decision writes besides its message: who the form names, the record of the decision,
and the application and applicant rows it makes or brings up to date."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from mailbot.clock import utcnow
from mailbot.decision import Decision, Outcome
from mailbot.identity import Identity, same_person
from parsers.model import Submission, to_jsonable
from storage.applications import (
    ApplicantRow,
    add_applicant,
    add_application,
    applicants_sharing_clues,
    application_named,
    update_applicant,
    update_application,
)


def person_columns(decision: Decision, submission: Submission) -> dict[str, Any]:
    """Who the form names and what it is, in the message's columns that the rules search by."""
    form = submission.form
    identity = decision.identity
    title = form.value("project_title") if form else None
    return {
        "form_sha256": form.sha256 if form else None,
        "project_title": title if isinstance(title, str) else None,
        "person_email": identity.email if identity else None,
        "person_phone": identity.phone if identity else None,
        "person_name_key": identity.name_key if identity else None,
        "person_institution_key": identity.institution_key if identity else None,
    }


def decision_record(decision: Decision) -> dict[str, Any]:
    record: dict[str, Any] = to_jsonable(decision)
    record["outcome"] = decision.outcome.value
    return record


def _application_status(outcome: Outcome, previous: str | None, missing: tuple[str, ...] = ()) -> str:
    """The status of an application after ``outcome``: a revision is judged on its own form."""
    if outcome == Outcome.REVISION:
        if previous in (None, Outcome.ACCEPTED.value, Outcome.INCOMPLETE.value):
            return (Outcome.INCOMPLETE if missing else Outcome.ACCEPTED).value
        return previous  # late or duplicate stays what it was
    return outcome.value


def find_applicant(session: Session, call_id: str, identity: Identity) -> ApplicantRow | None:
    """The applicant row of this call that ``identity`` is the same person as, if any."""
    for applicant in applicants_sharing_clues(session, call_id, identity.email, identity.phone, identity.name_key):
        known = Identity(applicant.email, applicant.phone, applicant.name_key, applicant.institution_key)
        if same_person(known, identity):
            return applicant
    return None


def store_application(
    session: Session, pk: int, message_key: str, call_id: str, decision: Decision, submission: Submission
) -> int | None:
    """The id of the application this message now is the current form of (made if new)."""
    form = submission.form
    if form is None or decision.identity is None:
        return None
    now = utcnow()
    values = to_jsonable(form.values())
    key = decision.application_key or message_key
    current = {
        "current_message_pk": pk,
        "project_title": str(values.get("project_title") or "") or None,
        "fields": values,
        "missing": list(decision.missing),
        "flags": list(decision.flags),
        "updated_at": now,
    }
    known = application_named(session, key)
    if known is not None:
        status = _application_status(decision.outcome, known.status, decision.missing)
        update_application(session, known.id, {"status": status, **current})
        return known.id
    identity = decision.identity
    applicant = find_applicant(session, call_id, identity)
    person = {
        "name": str(values.get("applicant_name") or (applicant.name if applicant else "") or "")[:500] or None,
        "name_key": identity.name_key or (applicant.name_key if applicant else None),
        "institution_key": identity.institution_key or (applicant.institution_key if applicant else None),
        "email": identity.email or (applicant.email if applicant else None),
        "phone": identity.phone or (applicant.phone if applicant else None),
    }
    if applicant is None:
        applicant_id = add_applicant(session, call_id, person)
    else:
        applicant_id = applicant.id
        if any(person[column] != getattr(applicant, column) for column in person):
            update_applicant(session, applicant_id, person)
    created = {
        "call_id": call_id,
        "application_key": key,
        "applicant_id": applicant_id,
        "created_at": now,
        "duplicate_of_key": decision.duplicate_of,
        "status": _application_status(decision.outcome, None),
    }
    return add_application(session, {**created, **current})
