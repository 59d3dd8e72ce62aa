"""The failpoints themselves: inert unless armed, armed only by a valid spec, fired at the Nth hit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mailbot.deciding import MessageDecider, Processed
from mailbot.embedded import LOOPBACK, free_port
from mailbot.worker import Worker
from storage import failpoints
from storage.failpoints import OFF_THE_CLEAN_PATH, REGISTRY, FailpointHit, configure, failpoint, hits
from tests.conftest import ImapServer, load_corpus, make_settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def disarmed() -> Iterator[None]:
    configure(None)
    yield
    configure(None)


def test_unarmed_points_do_nothing_and_cost_one_check() -> None:
    assert failpoints._armed is None
    for name in REGISTRY:
        failpoint(name)
    failpoint("not.a.point")  # not even looked up while disarmed


@pytest.mark.parametrize(
    "spec", ["nope=1:call", "intake.record=0:kill", "intake.record=1:explode", "intake.record", "intake.record=x:raise"]
)
def test_a_wrong_spec_is_refused_not_ignored(spec: str) -> None:
    with pytest.raises(ValueError):
        configure(spec)


def test_raise_fires_at_exactly_the_nth_hit_and_hits_are_counted(tmp_path: Path) -> None:
    log = tmp_path / "hits"
    configure("outbox.sent=3:raise", log)
    failpoint("outbox.sent")
    failpoint("intake.record")
    failpoint("outbox.sent")
    with pytest.raises(FailpointHit):
        failpoint("outbox.sent")
    failpoint("outbox.sent")  # the fourth passes again
    assert hits(log) == {"outbox.sent": 4, "intake.record": 1}
    with pytest.raises(ValueError):
        failpoint("not.a.point")  # armed, a misspelt name is an error
    called: list[str] = []
    configure("imap.search=2:call", on_call=called.append)
    failpoint("imap.search")
    failpoint("imap.search")
    failpoint("imap.search")
    assert called == ["imap.search"]


def test_kill_is_a_sigkill_of_the_process_itself(tmp_path: Path) -> None:
    code = "from storage.failpoints import failpoint\nfailpoint('smtp.final')\nfailpoint('smtp.final')\nprint('alive')"
    env = dict(os.environ, PYTHONPATH=str(REPO), MAILBOT_FAILPOINTS="smtp.final=2:kill")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL and "alive" not in done.stdout
    env["MAILBOT_FAILPOINTS"] = "smtp.final=3:kill"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "alive" in done.stdout


def test_the_points_off_the_clean_path_are_reached_where_they_apply(
    tmp_path: Path, imap_server: ImapServer, corpus_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stage that fails (review.commit) and an SMTP server that is down (outbox.finish) reach the
    points a clean run never does; outbox.recover is reached by the crash tests' recoveries."""
    log = tmp_path / "hits"
    configure(None, log)
    load_corpus(imap_server, corpus_dir, ["smp-002", "smp-008"])
    nobody_listens = SimpleNamespace(host=LOOPBACK, port=free_port())
    settings = make_settings(tmp_path, imap_server, nobody_listens)  # type: ignore[arg-type]
    decide_and_store = MessageDecider.decide_and_store
    first: list[int] = []

    def fails_once(decider: MessageDecider, pk: int, *args: Any, **kwargs: Any) -> Processed:
        if not first:
            first.append(pk)
            raise RuntimeError("a stage failed")
        return decide_and_store(decider, pk, *args, **kwargs)

    monkeypatch.setattr(MessageDecider, "decide_and_store", fails_once)
    with Worker(settings, inline=True) as bot:
        bot.single_pass()
    reached = hits(log)
    assert reached["review.commit"] == 1 and reached["outbox.finish"] >= 1, reached
    assert OFF_THE_CLEAN_PATH - {"outbox.recover"} <= set(reached)
