"""``thespian-cluster start``'s stop: a signal wakes the wait at once and never hangs it.

Each case runs in its own interpreter (signal handlers and the wake-up fd belong to
a process's main thread): the child waits on :class:`thespian_cluster.cli._StopSignals`
and this test sends it real signals.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: The child: report each stop it sees, reset, wait again; "done N" after a SIGUSR1.
CHILD = """
import signal, sys
from thespian_cluster.cli import _StopSignals
stop = _StopSignals()
stop.install()
stop.starting = False
finished = []
signal.signal(signal.SIGUSR1, lambda *_: finished.append(True))
print("ready", flush=True)
seen = 0
while not finished:
    if stop.wait(float(sys.argv[1])):
        stop.requested = False
        seen += 1
        if sys.argv[2] == "echo":
            print("stop", flush=True)
print("done", seen, flush=True)
"""


def _child(period: float, mode: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(period), mode],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    return child


def test_a_signal_ends_the_wait_at_once() -> None:
    """The wait is 30 s long; a SIGTERM ends it in far less (without the wake-up fd
    Python would resume the interrupted select for the full 30 s)."""
    child = _child(30.0, "echo")
    assert child.stdout is not None
    try:
        for _ in range(3):
            sent = time.monotonic()
            child.send_signal(signal.SIGTERM)
            assert child.stdout.readline().strip() == "stop"
            assert time.monotonic() - sent < 5.0
        # Any handled signal wakes the wait (the wake-up fd gets a byte for each), so
        # the loop sees SIGUSR1's flag without a stop.
        child.send_signal(signal.SIGUSR1)
        out, _ = child.communicate(timeout=30)
    finally:
        child.kill()
    assert out.split()[-2:] == ["done", "3"]


def test_thousands_of_signals_during_short_waits_never_hang_it() -> None:
    """The old stop flag (a threading.Event set from the handler) hung for good when
    a signal landed inside Event.wait, which holds the lock set() needs: one start in
    ~130. Here signals land at every point of a tight wait loop."""
    child = _child(0.0001, "quiet")
    try:
        deadline = time.monotonic() + 2.0
        sent = 0
        while time.monotonic() < deadline:
            child.send_signal(signal.SIGINT)
            sent += 1
            time.sleep(0.0005)  # the pace of the storm, not a wait for an event
        child.send_signal(signal.SIGUSR1)
        out, _ = child.communicate(timeout=30)
    finally:
        child.kill()
    seen = int(out.split()[-1])
    assert sent > 500 and 0 < seen <= sent
