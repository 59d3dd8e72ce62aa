"""Typed settings read from a TOML file.

Secrets never live in the file: a mailbox or SMTP account names the environment
variable that holds its password (``password_env``), and :func:`resolve_secret`
reads it when a connection is made, so ``mailbot check`` can say which one is unset.
An OAuth2 account's ``oauth`` table names the variables of its client id, client secret and
refresh token the same way (:mod:`mailbot.oauth` renews its access tokens from them).

The tables are in parts: the accounts (mailboxes, SMTP, OAuth2) in :mod:`mailbot.config_accounts`,
the strict base of every table in :mod:`mailbot.config_section`, and the error messages that name
the file's table and key in :mod:`mailbot.config_errors`; the calls, the bot's own settings and
reading the file are here.
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from collections.abc import Mapping
from datetime import datetime, timedelta, tzinfo
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator, model_validator

from mailbot.config_accounts import MailboxSettings, SmtpSettings
from mailbot.config_errors import describe_errors
from mailbot.config_section import Section
from parsers.spec import FieldKind, FieldSpec, FormSpec, Topic

CONFIG_ENV = "MAILBOT_CONFIG"
DEFAULT_CONFIG_PATHS = (Path("mailbot.toml"), Path("/etc/mailbot/mailbot.toml"))

Eligibility = Literal["phd", "faculty", "none"]


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""


def _require_aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must carry a UTC offset, e.g. 2024-09-09T00:00:00+08:00")
    return value


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


class FieldSettings(Section):
    name: str
    kind: FieldKind = "text"
    labels: list[str] = Field(min_length=1)
    required: bool = False


class TopicSettings(Section):
    code: str
    name: str
    direction: str = ""


class SenderSettings(Section):
    address: str
    name: str = ""


class CallSettings(Section):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    name_zh: str
    name_en: str
    reference_prefix: str = Field(pattern=r"^[A-Z0-9]{2,12}$")
    addresses: list[str] = Field(min_length=1)
    opens: datetime
    deadline: datetime
    grace_minutes: int = Field(default=0, ge=0)
    timezone: str = "Asia/Shanghai"
    eligibility: Eligibility = "none"
    coordinators: list[str] = Field(default_factory=list)
    contact: str = ""
    sender: SenderSettings
    retention_days: int | None = Field(default=None, ge=1)
    cloud_links_accepted: bool = False
    institution_aliases: dict[str, str] = Field(default_factory=dict)
    field: list[FieldSettings] = Field(min_length=1)
    required_one_of: list[list[str]] = Field(default_factory=list)
    topic: list[TopicSettings] = Field(default_factory=list)
    # the blank form the fields were found in (``mailbot call new``), read again by ``mailbot call check``
    form: str = ""
    # the form's heading, which tells this call's submissions from another's at a shared address
    form_title: str = ""

    _check_opens = field_validator("opens", "deadline")(_require_aware)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        _zone(value)
        return value

    @model_validator(mode="after")
    def _opens_before_deadline(self) -> CallSettings:
        if self.opens >= self.deadline:
            raise ValueError("opens must be before deadline")
        names = [f.name for f in self.field]
        if len(set(names)) != len(names):
            raise ValueError("each [[call.field]] name may appear once")
        unknown = sorted({n for group in self.required_one_of for n in group} - set(names))
        if unknown:
            raise ValueError(f"required_one_of names fields that are not defined: {', '.join(unknown)}")
        return self

    @property
    def tz(self) -> tzinfo:
        return _zone(self.timezone)

    @property
    def effective_deadline(self) -> datetime:
        """Arrival at or after this instant is late."""
        return self.deadline + timedelta(minutes=self.grace_minutes)

    @cached_property
    def form_spec(self) -> FormSpec:
        return FormSpec(
            call_id=self.id,
            fields=tuple(FieldSpec(f.name, f.kind, tuple(f.labels), f.required) for f in self.field),
            topics=tuple(Topic(t.code, t.name, t.direction) for t in self.topic),
            required_one_of=tuple(tuple(group) for group in self.required_one_of),
        )


class StorageSettings(Section):
    url: str | None = None
    data_dir: str = "/var/lib/mailbot"


class DirectorySettings(Section):
    dir: str | None = None


class QueueSettings(DirectorySettings):
    imap_folder: str | None = None


class DigestSettings(Section):
    enabled: bool = True
    time: dt.time = dt.time(8, 0)
    timezone: str = "Asia/Shanghai"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        _zone(value)
        return value


class ProcessingSettings(Section):
    workers: int = Field(default=0, ge=0, description="parser processes; 0 means one per core")
    parse_timeout_s: float = Field(default=60.0, gt=0)
    parse_memory_mb: int = Field(default=1024, ge=64)
    max_message_mb: int = Field(default=60, ge=1)
    claim_margin_s: float = Field(
        default=60.0,
        ge=5.0,
        description=(
            "on a database workers share, added to the parse timeouts before a message claimed by"
            " another worker is taken for abandoned: the longest a decision may take, and the"
            " difference between the machines' clocks"
        ),
    )


class SecuritySettings(Section):
    """Whom answers may go to, and how many (README: Security)."""

    # RFC 8601 section 5: Authentication-Results are read only when added by one of these servers
    trusted_authserv_ids: list[str] = Field(default_factory=list)
    # "Header: value-prefix", case-insensitive: the receiving provider's verdict that a message is spam
    spam_verdict_headers: list[str] = Field(default_factory=lambda: ["X-Spam-Flag: YES", "X-Spam-Status: Yes"])
    max_answers_per_hour: int = Field(default=600, ge=1)
    max_answers_per_day: int = Field(default=3000, ge=1)
    max_answers_per_domain_per_day: int = Field(default=300, ge=1)
    decide_budget_s: float = Field(default=10.0, gt=0, description="time to identify one applicant")


class MetricsSettings(Section):
    """Prometheus metrics over HTTP; off unless a port is given (needs mailbot[metrics])."""

    host: str = "127.0.0.1"
    port: int | None = Field(default=None, gt=0, lt=65536)


class TemplateSettings(Section):
    dir: str | None = None


class Settings(Section):
    mailbox: list[MailboxSettings] = Field(default_factory=list)
    call: list[CallSettings] = Field(min_length=1)
    smtp: SmtpSettings
    storage: StorageSettings = StorageSettings()
    archive: DirectorySettings = DirectorySettings()
    queue: QueueSettings = QueueSettings()
    digest: DigestSettings = DigestSettings()
    processing: ProcessingSettings = ProcessingSettings()
    templates: TemplateSettings = TemplateSettings()
    metrics: MetricsSettings = MetricsSettings()
    security: SecuritySettings = SecuritySettings()

    @model_validator(mode="after")
    def _cross_references(self) -> Settings:
        call_ids = [c.id for c in self.call]
        if len(set(call_ids)) != len(call_ids):
            raise ValueError("each [[call]] id may appear once")
        prefixes = [c.reference_prefix for c in self.call]
        if len(set(prefixes)) != len(prefixes):  # references are unique across calls
            raise ValueError("each [[call]] reference_prefix may appear once")
        names = [m.name for m in self.mailbox]
        if len(set(names)) != len(names):
            raise ValueError("each [[mailbox]] name may appear once")
        for box in self.mailbox:
            unknown = sorted(set(box.calls) - set(call_ids))
            if unknown:
                raise ValueError(f"[[mailbox]] {box.name!r} names unknown calls: {', '.join(unknown)}")
        return self

    @property
    def data_dir(self) -> Path:
        return Path(self.storage.data_dir)

    @property
    def database_url(self) -> str:
        return self.storage.url or f"sqlite:///{self.data_dir / 'mailbot.db'}"

    @property
    def archive_dir(self) -> Path:
        return Path(self.archive.dir) if self.archive.dir else self.data_dir / "archive"

    @property
    def queue_dir(self) -> Path:
        return Path(self.queue.dir) if self.queue.dir else self.data_dir / "queue"

    def call_by_id(self, call_id: str) -> CallSettings:
        for call in self.call:
            if call.id == call_id:
                return call
        raise KeyError(call_id)

    def mailbox_for_call(self, call_id: str) -> str | None:
        """The name of the first mailbox that receives ``call_id`` (whose Sent folder its mail is filed in)."""
        return next((box.name for box in self.mailbox if call_id in box.calls), None)

    def mailbox_by_name(self, name: str) -> MailboxSettings:
        for box in self.mailbox:
            if box.name == name:
                return box
        raise KeyError(name)

    @property
    def secret_env_names(self) -> list[str]:
        """The environment variables that hold secrets: their values are masked in every log line."""
        names: list[str | None] = []
        accounts: list[MailboxSettings | SmtpSettings] = [*self.mailbox, self.smtp]
        for account in accounts:
            names.append(account.password_env)
            if account.oauth is not None:
                names.extend((account.oauth.client_secret_env, account.oauth.refresh_token_env))
        return [name for name in names if name]

    @property
    def own_addresses(self) -> frozenset[str]:
        """Every address the bot sends from or reads: mail from these is never answered."""
        found = {m.user.lower() for m in self.mailbox}
        for call in self.call:
            found.add(call.sender.address.lower())
            found.update(a.lower() for a in call.addresses)
        if self.smtp.user:
            found.add(self.smtp.user.lower())
        return frozenset(found)


def resolve_secret(section: MailboxSettings | SmtpSettings, environ: Mapping[str, str] | None = None) -> str:
    """The password or OAuth2 token named by ``password_env``; raises ConfigError if unset."""
    name = section.password_env
    if not name:
        raise ConfigError(f"{describe_account(section)} has no password_env")
    return secret_from_env(section, name, environ)


def secret_from_env(
    section: MailboxSettings | SmtpSettings, name: str, environ: Mapping[str, str] | None = None
) -> str:
    """The value of the environment variable ``name`` that ``section`` names; ConfigError if unset."""
    value = (os.environ if environ is None else environ).get(name)
    if not value:
        raise ConfigError(f"{describe_account(section)}: environment variable {name} is not set")
    return value


def describe_account(section: MailboxSettings | SmtpSettings) -> str:
    if isinstance(section, MailboxSettings):
        return f"[[mailbox]] {section.name!r}"
    return "[smtp]"


def parse_settings(raw: Mapping[str, Any], source: str = "<config>") -> Settings:
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        lines = describe_errors(exc, raw, Settings)
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(lines)) from None


def load_settings(path: str | Path | None = None) -> Settings:
    """Read the TOML file at ``path``, ``$MAILBOT_CONFIG`` or the first default path that exists."""
    chosen = _choose_path(path)
    try:
        raw = tomllib.loads(chosen.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{chosen}: cannot read configuration: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{chosen}: not valid TOML: {exc}") from None
    return parse_settings(raw, str(chosen))


def _choose_path(path: str | Path | None) -> Path:
    if path:
        return Path(path)
    if env := os.environ.get(CONFIG_ENV):
        return Path(env)
    for candidate in DEFAULT_CONFIG_PATHS:
        if candidate.exists():
            return candidate
    raise ConfigError(
        f"no configuration: pass --config FILE, set {CONFIG_ENV}, or create "
        + " or ".join(str(p) for p in DEFAULT_CONFIG_PATHS)
    )


def example_config_text() -> str:
    """The example configuration shipped with the package (also the demo's base)."""
    from importlib import resources

    packaged = resources.files("mailbot").joinpath("config.example.toml")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parent.parent / "config.example.toml"
    return checkout.read_text(encoding="utf-8")
