"""What the rules read about one message: the facts the caller gives, and what follows from them.

The caller (the pipeline, an admin's preview, a test) gathers the facts — the reading, the arrival,
the call's earlier applications, which of the Message-IDs the mail refers to are the fund's — and
nothing here looks anything up. What follows from them (the form's values, who it names, the
person's earlier applications grouped) is worked out once, when the first rule asks for it: a
machine's mail is decided without identifying anybody.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cached_property

from mailbot.classify import replies_to_us
from mailbot.config import Eligibility
from mailbot.decision import CallRules, PriorApplication
from mailbot.identity import Identity, identity_of, match_reason, title_similarity
from parsers.model import FormReading, Submission

_DOCTORATE = re.compile(r"博士|ph\.?\s?d|doctor|d\.?\s?phil|doctorate", re.IGNORECASE)
_FACULTY = re.compile(
    r"教授|讲师|研究员|高级工程师|教授级高工|高工|professor|lecturer|researcher|research\s+fellow"
    r"|scientist|senior\s+engineer|principal\s+investigator|faculty",
    re.IGNORECASE,
)

_NOT_YET_FACULTY = re.compile(r"博士后|研究生|学生|post-?doc|student|candidate", re.IGNORECASE)


def _text(values: Mapping[str, object], name: str) -> str:
    value = values.get(name)
    return value.strip() if isinstance(value, str) else ""


def eligibility_flags(values: Mapping[str, object], eligibility: Eligibility) -> tuple[str, ...]:
    """What a coordinator should check about eligibility; it never changes the outcome."""
    if eligibility == "phd":
        degree = _text(values, "degree")
        if not degree:
            return ("eligibility:degree-unknown",)
        return () if _DOCTORATE.search(degree) else ("eligibility:no-phd",)
    if eligibility == "faculty":
        title = _text(values, "title")
        if not title:
            return ("eligibility:title-unknown",)
        on_staff = _FACULTY.search(title) and not _NOT_YET_FACULTY.search(title)
        return () if on_staff else ("eligibility:not-faculty",)
    return ()


CUT = "values_cut"  # what the reader cut at a value's length cap, stated beside the values
_SHOWN = ("applicant_name", "institution", "email", "phone", "project_title", "topic", CUT)

# one application of the person: its messages in arrival order, each with why it is the same person
Application = list[tuple[PriorApplication, str]]


def grouped_by_application(priors: Sequence[tuple[PriorApplication, str]]) -> dict[str, Application]:
    """The person's earlier messages grouped by application, in the order the applications began."""
    grouped: dict[str, Application] = {}
    for prior, reason in sorted(priors, key=lambda item: item[0].arrival):
        grouped.setdefault(prior.application_key, []).append((prior, reason))
    return dict(sorted(grouped.items(), key=lambda item: item[1][0][0].arrival))


class Facts:
    """One message as the rules see it. ``identity``: the form's, when the caller has computed it already."""

    def __init__(
        self,
        sub: Submission,
        message_key: str,
        arrival: datetime,
        call: CallRules,
        priors: Sequence[PriorApplication],
        ours: frozenset[str],
        identity: Identity | None = None,
    ) -> None:
        self.sub = sub
        self.envelope = sub.envelope
        self.message_key = message_key
        self.arrival = arrival
        self.call = call
        self.priors = priors
        self.ours = ours
        if identity is not None:
            self.identity = identity  # fills the cached property below

    # --- the sender ------------------------------------------------------------------------

    @cached_property
    def sender(self) -> str:
        env = self.envelope
        return f"{env.from_name} <{env.from_addr}>" if env.from_name else env.from_addr or "an unknown sender"

    @cached_property
    def sender_identity(self) -> Identity:
        env = self.envelope
        values = {"email": env.from_addr, "applicant_name": env.from_name}
        return identity_of(values, env.from_addr, self.call.institution_aliases)

    @cached_property
    def reply(self) -> str | None:
        """Why this message answers one of the fund's own messages, or None."""
        return replies_to_us(self.envelope, self.ours, (self.call.reference_prefix,))

    # --- the form (only for a message whose form was read) ----------------------------------

    @cached_property
    def form(self) -> FormReading:
        assert self.sub.form is not None, "a rule about the form ran on a message without one"
        return self.sub.form

    @cached_property
    def read_values(self) -> dict[str, object]:
        return dict(self.form.values())

    @cached_property
    def values(self) -> dict[str, object]:
        """The form's values as recorded: with what the reader cut, if it cut anything."""
        cut = self.form.cut
        return {**self.read_values, CUT: "; ".join(cut)} if cut else self.read_values

    @cached_property
    def identity(self) -> Identity:
        return identity_of(self.read_values, self.envelope.from_addr, self.call.institution_aliases)

    @cached_property
    def missing(self) -> tuple[str, ...]:
        return self.call.spec.missing(self.read_values)

    @cached_property
    def flags(self) -> tuple[str, ...]:
        flags = eligibility_flags(self.read_values, self.call.eligibility)
        if self.form.cut:
            flags += ("value-cut",)
        if self.arrival < self.call.opens:
            flags += ("before-opening",)
        if self.sub.other_forms:
            flags += ("several-forms",)
        return flags

    @cached_property
    def form_matched(self) -> dict[str, str]:
        values = self.values
        return {name: str(values[name]) for name in _SHOWN if values.get(name) not in (None, "")}

    @cached_property
    def title(self) -> str | None:
        title = self.values.get("project_title")
        return title if isinstance(title, str) else None

    @cached_property
    def forwarding(self) -> dict[str, str]:
        """Who forwarded the form (a secretary for a professor): the form names the applicant, this is the record."""
        sub = self.sub
        if not sub.forwarded_by:
            return {}
        return {
            "forwarded_by": sub.forwarded_by,
            **({"forwarded_from": sub.forwarded_from} if sub.forwarded_from else {}),
        }

    # --- the person's earlier applications ----------------------------------------------------

    @cached_property
    def applications(self) -> dict[str, Application]:
        """The applications earlier forms of the same person belong to, in the order they began."""
        mine = [(p, reason) for p in self.priors if (reason := match_reason(p.identity, self.identity))]
        return grouped_by_application(mine)

    @cached_property
    def title_scores(self) -> dict[str, float]:
        """How like this form's title each application's closest title is, in per cent."""
        return {
            key: max(title_similarity(self.title, prior.project_title) for prior, _ in application)
            for key, application in self.applications.items()
        }

    @cached_property
    def closest_application(self) -> str:
        scores = self.title_scores
        return max(scores, key=lambda key: scores[key])
