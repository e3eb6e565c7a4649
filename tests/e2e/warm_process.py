"""A ``hypemeter`` process started ahead of need (see ``cluster.WarmPool``).

It imports the server, the worker and the cluster drivers, then waits on stdin for
one line of JSON: ``{"args": [...], "env": {...}, "log": path}``. It then sends its
output to ``log``, takes ``env`` as its whole environment and runs ``hypemeter ARGS``
exactly as the console script does. An empty line (the pool closing) ends it.
"""

from __future__ import annotations

import json
import os
import sys

import hypemeter.app
import hypemeter.backends.cluster.logged_store
import hypemeter.backends.cluster.postgres_store
import hypemeter.backends.cluster.redis_bus
import hypemeter.cli
import hypemeter.serving
import hypemeter.worker

del hypemeter  # imported for their import cost only: the command uses them later


def main() -> None:
    line = sys.stdin.readline()
    if not line.strip():
        return
    spec = json.loads(line)
    out = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.environ.clear()
    os.environ.update(spec["env"])
    sys.argv = ["hypemeter", *spec["args"]]
    from hypemeter.cli import main as hypemeter_main

    hypemeter_main()


if __name__ == "__main__":
    main()
