"""Earlier forms of a call that could be the same person's: what the rules compare a new form with.

Found by index, in two steps: the few messages sharing a clue with the new form, then every form
of the applications those belong to (the rules look at an application whole).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import CompoundSelect, and_, bindparam, or_, select, true, union
from sqlalchemy.orm import Session

from storage.models import APPLICATIONS, MESSAGES


@dataclass(frozen=True)
class PriorRow:
    """An earlier form, as stored: the columns the rules compare (``outcome`` as its stored name)."""

    message_key: str
    arrival: datetime
    outcome: str
    person_email: str | None
    person_phone: str | None
    person_name_key: str | None
    person_institution_key: str | None
    project_title: str | None
    form_sha256: str | None
    application_key: str
    reference: str | None


@cache
def _clue_matches_query(email: bool, phone: bool, form: bool, name_and_place: bool, named: bool) -> CompoundSelect[Any]:
    """Messages of a call sharing any of the given clues with a form (built once for each set of clues).

    One SELECT per clue, each with the call alone beside it, so that each is answered from the
    index of its clue: written as one OR, or with the arrival beside it, SQLite read every earlier
    message of the call instead, and deciding slowed down as the call filled up.
    """
    # the rules' own conditions (identity.match_reason), so a contact shared by many forms (a
    # secretary's phone, a placeholder number) does not bring every form naming someone else
    same_name_or_unnamed = (
        or_(MESSAGES.c.person_name_key == bindparam("name_key"), MESSAGES.c.person_name_key.is_(None))
        if named
        else true()
    )
    clues = [
        and_(column == bindparam(key), same_name_or_unnamed)
        for column, key, given in (
            (MESSAGES.c.person_email, "email", email),
            (MESSAGES.c.person_phone, "phone", phone),
        )
        if given
    ]
    if form:
        clues.append(MESSAGES.c.form_sha256 == bindparam("form_sha256"))
    if name_and_place:
        # a name matches only at the same institution: namesakes elsewhere are not even candidates
        clues.append(
            and_(
                MESSAGES.c.person_name_key == bindparam("name_key"),
                MESSAGES.c.person_institution_key == bindparam("institution_key"),
            )
        )
    return union(
        *(
            select(MESSAGES.c.id, MESSAGES.c.outcome, MESSAGES.c.arrival, MESSAGES.c.application_id).where(
                MESSAGES.c.call_id == bindparam("call_id"), clue
            )
            for clue in clues
        )
    )


_SELECT_PRIORS = (
    select(
        MESSAGES.c.id,
        MESSAGES.c.message_key,
        MESSAGES.c.arrival,
        MESSAGES.c.outcome,
        MESSAGES.c.person_email,
        MESSAGES.c.person_phone,
        MESSAGES.c.person_name_key,
        MESSAGES.c.person_institution_key,
        MESSAGES.c.project_title,
        MESSAGES.c.form_sha256,
        APPLICATIONS.c.application_key,
        MESSAGES.c.reference,
    )
    .join(APPLICATIONS, MESSAGES.c.application_id == APPLICATIONS.c.id)
    .where(MESSAGES.c.application_id.in_(bindparam("applications", expanding=True)))
    .order_by(MESSAGES.c.arrival, MESSAGES.c.id)
)


def earlier_forms(
    session: Session,
    call_id: str,
    before: datetime,
    exclude_pk: int,
    counted: Collection[str],
    *,
    email: str | None,
    phone: str | None,
    name_key: str | None,
    institution_key: str | None,
    form_sha256: str | None,
) -> list[PriorRow]:
    """Earlier forms of this call (outcome among ``counted``, not ``exclude_pk``) that could be the same person's.

    Only messages sharing an email or a phone (under the same or no name), name and institution,
    or the very file with the new form can match (the rules need one of them), so those are found
    by index; every message of their applications comes along, since the rules look at them whole.
    """
    name_and_place = bool(name_key and institution_key)
    if not (email or phone or form_sha256 or name_and_place):
        return []
    clue_matches = _clue_matches_query(bool(email), bool(phone), bool(form_sha256), name_and_place, bool(name_key))
    clues = {
        "call_id": call_id,
        "email": email,
        "phone": phone,
        "form_sha256": form_sha256,
        "name_key": name_key,
        "institution_key": institution_key,
    }

    # which of the few rows found count (earlier, readable, not this message) is checked here
    def counts(pk: int, outcome: str | None, arrival: datetime) -> bool:
        return pk != exclude_pk and outcome in counted and arrival <= before

    applications = {
        row.application_id
        for row in session.execute(clue_matches, clues)
        if row.application_id is not None and counts(row.id, row.outcome, row.arrival)
    }
    if not applications:
        return []
    found = session.execute(_SELECT_PRIORS, {"applications": sorted(applications)})
    return [PriorRow(*tuple(row)[1:]) for row in found if counts(row.id, row.outcome, row.arrival)]
