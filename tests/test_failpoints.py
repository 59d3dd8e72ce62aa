"""The failpoints themselves: inert unless armed, armed only by a valid spec, fired at the Nth hit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import failpoints
from storage.failpoints import REGISTRY, FailpointHit, configure, failpoint, hits

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
    "spec", ["nope=1:kill", "intake.record=0:kill", "intake.record=1:explode", "intake.record", "intake.record=x:raise"]
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


def test_kill_is_a_sigkill_of_the_process_itself(tmp_path: Path) -> None:
    code = "from storage.failpoints import failpoint\nfailpoint('smtp.final')\nfailpoint('smtp.final')\nprint('alive')"
    env = dict(os.environ, PYTHONPATH=str(REPO), MAILBOT_FAILPOINTS="smtp.final=2:kill")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL and "alive" not in done.stdout
    env["MAILBOT_FAILPOINTS"] = "smtp.final=3:kill"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "alive" in done.stdout
