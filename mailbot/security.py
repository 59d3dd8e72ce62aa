"""Whom an automatic answer may go to: real senders who wrote to the fund, never a forged or third party.

The checks follow what mature responders do (RFC 3834 sections 2-4, Dovecot Pigeonhole's vacation):
answer only mail addressed to us, only its envelope's sender or an authenticated author, and never
on the word of a header the receiving server did not write. ``Authentication-Results`` are read only
from the authserv-ids the admin trusts (RFC 8601 section 5): anyone can write such a header into the
mail they send, so with none trusted, none is believed.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from parsers.model import Envelope

_COMMENT = re.compile(r"\([^()]*\)")
_RESULT = re.compile(r"^\s*([a-z0-9-]+)(?:/[0-9]+)?\s*=\s*([a-z0-9-]+)(.*)$", re.IGNORECASE | re.DOTALL)
_PROPERTY = re.compile(r"([a-z0-9-]+\.[a-z0-9_-]+)\s*=\s*(\S+)", re.IGNORECASE)
_DELIVERY_HEADERS = frozenset({"delivered-to", "x-original-to"})
GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})


@dataclass(frozen=True)
class Authentication:
    """What the trusted receiving servers found: DMARC and SPF results, domains of passing DKIM signatures."""

    dmarc: str | None = None
    spf: str | None = None
    dkim_pass_domains: tuple[str, ...] = ()
    seen_by: tuple[str, ...] = field(default_factory=tuple)  # authserv-ids whose results were read


def _domain(address: str | None) -> str:
    return (address or "").rpartition("@")[2].strip().strip(">").lower()


def aligned(a: str, b: str) -> bool:
    """Relaxed alignment (RFC 7489 3.1): the same domain, or one a subdomain of the other."""
    return bool(a and b) and (a == b or a.endswith("." + b) or b.endswith("." + a))


def authentication_of(envelope: Envelope, trusted_authserv_ids: Collection[str]) -> Authentication:
    """The results of ``Authentication-Results`` headers written by trusted servers; others are ignored."""
    trusted = {server.lower() for server in trusted_authserv_ids}
    if not trusted:
        return Authentication()
    dmarc: str | None = None
    spf: str | None = None
    dkim: list[str] = []
    seen: list[str] = []
    for name, value in envelope.trace:
        if name != "authentication-results":
            continue
        statements = _COMMENT.sub(" ", value).split(";")
        authserv = statements[0].split()[0].lower() if statements[0].split() else ""
        if authserv not in trusted:
            continue
        seen.append(authserv)
        for statement in statements[1:]:
            found = _RESULT.match(statement)
            if not found:
                continue
            method, result, rest = found.group(1).lower(), found.group(2).lower(), found.group(3)
            properties = {key.lower(): val.strip('"').lower() for key, val in _PROPERTY.findall(rest)}
            if method == "dmarc" and dmarc is None:
                dmarc = result
            elif method == "spf" and spf is None:
                spf = result
            elif method == "dkim" and result == "pass":
                signer = properties.get("header.d") or _domain(properties.get("header.i"))
                if signer:
                    dkim.append(signer)
    return Authentication(dmarc, spf, tuple(dkim), tuple(seen))


def spam_verdict(envelope: Envelope, verdict_headers: Iterable[str]) -> str | None:
    """The first ``Header: value`` of ``verdict_headers`` the message carries (value compared as a prefix)."""
    for pattern in verdict_headers:
        wanted_name, _, wanted_value = pattern.partition(":")
        wanted_name, wanted_value = wanted_name.strip().lower(), wanted_value.strip().lower()
        for name, value in envelope.trace:
            if name == wanted_name and value.strip().lower().startswith(wanted_value):
                return f"{pattern.strip()}"
    return None


@dataclass(frozen=True)
class Answerability:
    """Whom to answer (None: nobody), why not, and whether the author proved who they are."""

    recipient: str | None
    why_not: str | None
    authenticated: bool


def answerability(
    envelope: Envelope,
    fund_addresses: Collection[str],
    trusted_authserv_ids: Collection[str],
    verdict_headers: Iterable[str],
) -> Answerability:
    """May this message be answered, and to which address.

    Refused: a spam verdict of the provider; a trusted ``dmarc=fail``, or ``spf=fail`` without a
    passing DKIM signature; mail not addressed (To, Cc, Delivered-To, X-Original-To) to a fund
    address; a From that disagrees with the envelope sender (Return-Path) of an unauthenticated
    message. A Reply-To other than the From is followed only for an authenticated author.
    """
    sender = envelope.from_addr.strip().lower()
    from_domain = _domain(sender)
    auth = authentication_of(envelope, trusted_authserv_ids)
    authenticated = auth.dmarc == "pass" or any(aligned(d, from_domain) for d in auth.dkim_pass_domains)

    def refuse(why: str) -> Answerability:
        return Answerability(None, why, authenticated)

    spam = spam_verdict(envelope, verdict_headers)
    if spam:
        return refuse(f"the receiving server marked it as spam ({spam})")
    if auth.dmarc == "fail":
        return refuse("DMARC failed at the receiving server: the From address is forged")
    if auth.spf == "fail" and not auth.dkim_pass_domains:
        return refuse("SPF failed and no DKIM signature passed at the receiving server")
    fund = {address.lower() for address in fund_addresses}
    delivered = [value.lower().strip("<> ") for name, value in envelope.trace if name in _DELIVERY_HEADERS]
    addressed = [address.lower() for address in (*envelope.to, *envelope.cc)] + delivered
    if not fund.intersection(addressed):
        return refuse("it was not addressed to a fund address (To, Cc or Delivered-To)")
    if envelope.return_path and not authenticated and not aligned(_domain(envelope.return_path), from_domain):
        return refuse(f"the From address does not agree with the envelope sender {envelope.return_path}")
    recipient = sender
    reply_to = envelope.reply_to[0].strip().lower() if envelope.reply_to else ""
    if reply_to and reply_to != sender and authenticated:
        recipient = reply_to
    return Answerability(recipient or None, None if recipient else "the sender has no usable address", authenticated)


def recipient_key(address: str) -> str:
    """One spelling per mailbox: lower case, ``+tag`` dropped, and dots dropped where Gmail ignores them."""
    local, at, domain = address.strip().lower().rpartition("@")
    if not at:
        return address.strip().lower()
    local = local.split("+", 1)[0] or local
    if domain in GMAIL_DOMAINS:
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}"


def domain_of(address: str) -> str:
    return _domain(recipient_key(address))
