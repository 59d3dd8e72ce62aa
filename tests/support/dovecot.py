"""A throw-away Dovecot IMAP server on a free loopback port, for tests and benchmarks.

It writes its own dovecot.conf (passwd-file users, maildir under a temporary directory,
``ssl = no``), runs as the ``dovecot``/``dovenull`` users when started as root with the mail owned
by an unprivileged user, and is stopped and removed afterwards.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

LOOPBACK = "127.0.0.1"
MAIL_USER = "nobody"


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)


def _traversable_tmp() -> str | None:
    """A temporary-files directory the unprivileged Dovecot users can pass through."""
    for candidate in (os.environ.get("TMPDIR"), tempfile.gettempdir(), "/var/tmp", "/dev/shm"):
        if (
            candidate
            and Path(candidate).is_dir()
            and all(os.stat(p).st_mode & 0o001 for p in [Path(candidate), *Path(candidate).parents])
        ):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


class DovecotServer:
    def __init__(self, users: dict[str, str]) -> None:
        binary = dovecot_binary()
        if binary is None:
            raise FileNotFoundError("dovecot is not installed (Debian: apt-get install dovecot-imapd)")
        self.binary = binary
        self.users = users
        self.host = LOOPBACK
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="mailbot-dovecot-", dir=_traversable_tmp()))
        self.process: subprocess.Popen[bytes] | None = None
        # settings appended to the generated configuration; they take effect at the next (re)start
        self.extra_config = ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def config_path(self) -> Path:
        return self.root / "dovecot.conf"

    def accept_oauth2(self, introspection_url: str) -> None:
        """Also take XOAUTH2/OAUTHBEARER logins, asking ``introspection_url`` (RFC 7662) about each token.

        Dovecot's ``oauth2`` passdb POSTs ``token=…`` there and lets the user in whose name the
        answer's ``username`` gives while ``active`` is true. Takes effect at the next (re)start.
        """
        settings = self.root / "dovecot-oauth2.conf.ext"
        settings.write_text(
            f"""introspection_mode = post
introspection_url = {introspection_url}
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
"""
        )
        settings.chmod(0o644)
        self.extra_config += f"""
auth_mechanisms = plain login xoauth2 oauthbearer
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {settings}
}}
"""

    def _write_config(self) -> None:
        root = self.root
        as_root = os.geteuid() == 0
        if as_root:
            mail_owner = pwd.getpwnam(MAIL_USER)
            login_user, internal_user = "dovenull", "dovecot"
        else:
            mail_owner = pwd.getpwuid(os.geteuid())
            login_user = internal_user = mail_owner.pw_name
        for sub in ("run", "mail", "home", "state"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)
        if as_root:
            for sub in ("mail", "home"):
                os.chown(root / sub, mail_owner.pw_uid, mail_owner.pw_gid)
        (root / "passwd").write_text(
            "".join(f"{user}:{{PLAIN}}{password}::::::\n" for user, password in self.users.items())
        )
        (root / "passwd").chmod(0o644)
        self.config_path.write_text(
            f"""
base_dir = {root}/run
state_dir = {root}/state
instance_name = mailbot-test-{self.port}
listen = {LOOPBACK}
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
default_login_user = {login_user}
default_internal_user = {internal_user}
first_valid_uid = 1
mail_location = maildir:{root}/mail/%u
mail_fsync = always
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_owner.pw_uid} gid={mail_owner.pw_gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = {LOOPBACK}
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
protocol imap {{
  mail_max_userip_connections = 100
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = create
  }}
}}
{self.extra_config}
"""
        )

    def start(self, timeout_s: float = 20.0) -> None:
        self._write_config()
        self.process = subprocess.Popen(
            [self.binary, "-F", "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"dovecot exited at start: {err}\n{self.log_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as conn:
                    if conn.recv(200).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"dovecot did not start on port {self.port}\n{self.log_text()}")

    @property
    def pid(self) -> int:
        """The master process, which reaps the imap processes it starts (and so counts their CPU)."""
        if self.process is None:
            raise RuntimeError("dovecot is not running")
        return self.process.pid

    def log_text(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if process is not None and process.stderr:
            process.stderr.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def restart(self) -> None:
        """Stop and start the server on the same port with the same mail (for fault tests)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        self.start()

    def reset_uidvalidity(self, user: str) -> None:
        """Throw away the UID list and indexes of ``user``'s INBOX, as a restore from backup does:
        the folder comes back with a new UIDVALIDITY and new UIDs."""
        time.sleep(1.1)  # Dovecot derives UIDVALIDITY from the clock: a new second gives a new value
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        maildir = self.root / "mail" / user
        removed = [p for p in maildir.iterdir() if p.name.startswith("dovecot")]
        if not any(p.name == "dovecot-uidlist" for p in removed):
            raise RuntimeError(f"no dovecot-uidlist in {maildir}: {sorted(p.name for p in maildir.iterdir())}")
        for path in removed:
            path.unlink()
        self.start()
