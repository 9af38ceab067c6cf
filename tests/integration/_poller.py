"""A client that polls one port as fast as it can: ``python -m tests.integration._poller PORT``.

Each round connects and looks up the node's Registry, the way a readiness probe or
an orchestration script does. It prints ``polling`` once it runs and, when SIGTERM
stops it, ``polls N ready M`` (rounds made, rounds that found the Registry).
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from thespian_cluster.node import NodeError, connect, disconnect, registry_address


def main(port: int) -> None:
    stop = False

    def stopped(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, stopped)
    polls = ready = 0
    print("polling", flush=True)
    while not stop:
        polls += 1
        try:
            system = connect(port)
        except NodeError:
            continue  # nothing listens yet (or any more)
        try:
            registry_address(system)
            ready += 1
        except NodeError:
            pass  # starting, or stopping
        finally:
            disconnect(system)
    print(f"polls {polls} ready {ready}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
