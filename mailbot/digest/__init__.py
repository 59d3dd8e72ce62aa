"""The coordinators' daily digest: where a call stands, what is new, and what needs a person.

One module per job: :mod:`.moment` (the call as it stood at a moment, from the event log),
:mod:`.contents` and :mod:`.attention` (the digest's data: :func:`.contents.build_digest` reads the
database and nothing else, so a digest can be previewed, tested and rebuilt for any day),
:mod:`.render` (its words, and the mail with the call's workbook attached), :mod:`.queueing` (into
the outbox once per call and day, however many workers try) and :mod:`.command` (``mailbot digest``).
"""
