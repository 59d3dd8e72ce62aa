"""Applicants and their applications: the rows a decision makes or brings up to date.

An application is named by its key (the message key of its first form) and points at its current
form; an applicant is a call's person, found again by the clues a form gives (email, phone, name).
Whether a row found by a clue is the same person is the caller's judgement, not a statement's.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, insert, or_, select, update
from sqlalchemy.orm import Session

from storage.models import APPLICANTS, APPLICATIONS


@dataclass(frozen=True)
class ApplicantRow:
    id: int
    name: str | None
    name_key: str | None
    institution_key: str | None
    email: str | None
    phone: str | None


@dataclass(frozen=True)
class ApplicationRow:
    id: int
    status: str


_SELECT_APPLICATION = select(APPLICATIONS.c.id, APPLICATIONS.c.status).where(
    APPLICATIONS.c.application_key == bindparam("key")
)
_UPDATE_APPLICANT = update(APPLICANTS).where(APPLICANTS.c.id == bindparam("row_id"))
_UPDATE_APPLICATION = update(APPLICATIONS).where(APPLICATIONS.c.id == bindparam("row_id"))
_INSERT_APPLICANT = insert(APPLICANTS).returning(APPLICANTS.c.id)
_INSERT_APPLICATION = insert(APPLICATIONS).returning(APPLICATIONS.c.id)


def application_named(session: Session, application_key: str) -> ApplicationRow | None:
    row = session.execute(_SELECT_APPLICATION, {"key": application_key}).one_or_none()
    return None if row is None else ApplicationRow(int(row.id), row.status)


def update_application(session: Session, application_id: int, columns: dict[str, Any]) -> None:
    session.execute(_UPDATE_APPLICATION, {"row_id": application_id, **columns})


def add_application(session: Session, columns: dict[str, Any]) -> int:
    return int(session.execute(_INSERT_APPLICATION, columns).scalar_one())


@cache
def _applicants_query(email: bool, phone: bool, name: bool) -> Select[Any]:
    """A call's applicants sharing any of the given clues (built once for each set of clues)."""
    clues = [
        column == bindparam(column.key)
        for column, given in ((APPLICANTS.c.email, email), (APPLICANTS.c.phone, phone), (APPLICANTS.c.name_key, name))
        if given
    ]
    return select(*(APPLICANTS.c[name] for name in ApplicantRow.__dataclass_fields__)).where(
        APPLICANTS.c.call_id == bindparam("call_id"), or_(*clues)
    )


def applicants_sharing_clues(
    session: Session, call_id: str, email: str | None, phone: str | None, name_key: str | None
) -> list[ApplicantRow]:
    """The call's applicants with this email, this phone or this name (none without any of them)."""
    if not (email or phone or name_key):
        return []
    query = _applicants_query(bool(email), bool(phone), bool(name_key))
    clues = {"call_id": call_id, "email": email, "phone": phone, "name_key": name_key}
    return [ApplicantRow(*row) for row in session.execute(query, clues)]


def add_applicant(session: Session, call_id: str, person: dict[str, Any]) -> int:
    return int(session.execute(_INSERT_APPLICANT, {"call_id": call_id, **person}).scalar_one())


def update_applicant(session: Session, applicant_id: int, person: dict[str, Any]) -> None:
    session.execute(_UPDATE_APPLICANT, {"row_id": applicant_id, **person})
