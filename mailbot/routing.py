"""One address, several calls: which call a submission belongs to, told by the form it carries.

A fund office often runs several calls from one mailbox. Intake records a message under the first
call its recipients name; when other calls share that address, the message is read once with each
call's form, and the call whose labels the document matches best wins, the subject and the
attachment's name settling a near tie (a form's heading or a call's name is often in both). When
the forms still cannot be told apart the message goes to the review queue naming the candidates;
a message without a form (a question, a forgotten attachment) stays with the call intake chose
unless its subject names another.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path

from mailbot.config import CallSettings, Settings
from parsers.model import Submission, Unreadable
from parsers.spec import FormSpec

# label-match scores closer than this are a tie, for the subject and file name to break
TIE = 0.08
# what a mention of the call in the subject or the file name adds to its form's score
MENTION_WEIGHT = 0.1


def sharing_calls(settings: Settings, call_id: str) -> list[CallSettings]:
    """The calls that receive mail at an address of ``call_id`` (itself first), in configuration order."""
    call = settings.call_by_id(call_id)
    own = {address.lower() for address in call.addresses}
    others = [c for c in settings.call if c.id != call_id and own & {a.lower() for a in c.addresses}]
    return [call, *others]


def _compact(text: str) -> str:
    return re.sub(r"[\s\W_]+", "", unicodedata.normalize("NFKC", text)).casefold()


def mention_strength(call: CallSettings, text: str) -> int:
    """How specifically ``text`` (a subject, a file name) names the call: the length of the longest of
    its name, form heading or id found there, more for one of its references; 0 when it does not."""
    if re.search(rf"(?<![A-Za-z0-9]){re.escape(call.reference_prefix)}-\d+", text, re.IGNORECASE):
        return 1000
    compact = _compact(text)
    names = (_compact(name) for name in (call.name_zh, call.name_en, call.form_title, call.id) if name)
    return max((len(name) for name in names if len(name) >= 4 and name in compact), default=0)


@dataclass(frozen=True)
class Route:
    call_id: str | None  # None: the forms could not be told apart
    scores: Mapping[str, float]


def _evidence(submission: Submission) -> set[tuple[str, str]]:
    """The filled places a reading took its values from: where, and what was written there."""
    form = submission.form
    if form is None:
        return set()
    return {(found.where.describe(), found.raw) for found in form.fields.values() if found.raw}


def choose(candidates: Sequence[CallSettings], readings: Mapping[str, Submission]) -> Route:
    """The call each reading points to; the first candidate (intake's choice) when no form was read.

    A form's score is the share of the call's labels the document has, times the share of what
    the document's readings found that this call's reading explains: a call whose few fields every
    form has (a subset) scores full on the first, but not on the second.
    """
    evidence = {call.id: _evidence(readings[call.id]) for call in candidates}
    seen = set().union(*evidence.values())
    strength = {}
    for call in candidates:
        submission = readings[call.id]
        places = [submission.envelope.subject, *(a.filename for a in submission.attachments)]
        strength[call.id] = max(mention_strength(call, text) for text in places)
    # "青年基金2026" names the 2026 round, not the "青年基金" its name also contains
    strongest = max(strength.values())
    scores: dict[str, float] = {}
    for call in candidates:
        submission = readings[call.id]
        mentioned = strongest > 0 and strength[call.id] == strongest
        form = submission.form
        coverage = len(evidence[call.id]) / len(seen) if seen else 0.0
        form_score = form.score * coverage if form is not None else 0.0
        scores[call.id] = round(form_score + (MENTION_WEIGHT if mentioned else 0.0), 3)
    with_form = [call for call in candidates if readings[call.id].form is not None]
    if not with_form:
        named = [call for call in candidates if scores[call.id] > 0]
        return Route(named[0].id if len(named) == 1 else candidates[0].id, scores)
    ranked = sorted(with_form, key=lambda call: scores[call.id], reverse=True)
    if len(ranked) > 1 and scores[ranked[0].id] - scores[ranked[1].id] < TIE:
        return Route(None, scores)
    return Route(ranked[0].id, scores)


def routed(candidates: Sequence[CallSettings], readings: Mapping[str, Submission]) -> Submission:
    """The reading of the chosen call, marked with it; an ambiguous one as unreadable, naming the candidates."""
    route = choose(candidates, readings)
    if route.call_id is not None:
        return replace(readings[route.call_id], routed_call=route.call_id)
    first = readings[candidates[0].id]
    close = sorted(route.scores, key=lambda call_id: route.scores[call_id], reverse=True)
    named = ", ".join(f"{call_id} ({route.scores[call_id]:.2f})" for call_id in close)
    attachment = first.form.attachment if first.form is not None else "(message)"
    detail = f"the form matches several calls at this address: {named}"
    return replace(
        first,
        form=None,
        other_forms=(),
        unreadable=Unreadable("ambiguous-call", attachment, detail),
        diagnostics=(*first.diagnostics, detail),
        routed_call=candidates[0].id,
    )


def read_for_calls(
    reader: Callable[[Path, FormSpec], Future[Submission]], original: Path, candidates: Sequence[CallSettings]
) -> Future[Submission]:
    """Read ``original`` once per candidate call (in the pool, side by side) and route the result."""
    readings_by_call = {call.id: reader(original, call.form_spec) for call in candidates}
    combined: Future[Submission] = Future()
    lock = threading.Lock()
    left = [len(readings_by_call)]

    def one_done(_: Future[Submission]) -> None:
        with lock:
            left[0] -= 1
            if left[0] or combined.cancelled():
                return
        try:
            readings = {call_id: future.result() for call_id, future in readings_by_call.items()}
            combined.set_result(routed(candidates, readings))
        except BaseException as exc:  # a reader's failure is the combined reading's failure
            combined.set_exception(exc)

    def dropped(_: Future[Submission]) -> None:
        if combined.cancelled():  # the pipeline dropped a reading ahead: so are its parts
            for future in readings_by_call.values():
                future.cancel()

    combined.add_done_callback(dropped)
    for future in readings_by_call.values():
        future.add_done_callback(one_done)
    return combined
