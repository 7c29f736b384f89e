"""For `make run`: make sure an SMTP server answers at notify.smtp, so notifications arrive.

If nothing answers there and the address is local, start a sink (aiosmtpd) in the background
that accepts every message and prints it on this terminal, so a newcomer sees a notification
arrive. It keeps running after `make run` stops; `make stop-smtp` ends it.
`python scripts/local_smtp.py --serve HOST PORT` runs the sink in the foreground.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

RUN = Path(".run")


def answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), 0.5).close()
        return True
    except OSError:
        return False


class Printer:
    """aiosmtpd handler: print each message (headers and text) and accept it."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.content, policy=default_policy)
        body = msg.get_body(("plain",))
        text = body.get_content() if body is not None else ""
        rule = "─" * 72
        print(
            f"\n{rule}\nmail from {envelope.mail_from} to {', '.join(envelope.rcpt_tos)}\n"
            f"Subject: {msg['Subject']}\n\n{text.rstrip()}\n{rule}",
            flush=True,
        )
        return "250 Message accepted for delivery"


async def serve(host: str, port: int) -> None:
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Printer()), host, port)
    print(f"local SMTP sink listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def start(host: str, port: int) -> int:
    RUN.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", host, str(port)], start_new_session=True
    )
    (RUN / "smtp.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 10
    while not answers(host, port):
        if time.monotonic() > deadline or proc.poll() is not None:
            print("could not start the local SMTP sink")
            return 1
        time.sleep(0.05)
    print(
        f"started a local SMTP sink (aiosmtpd, pid {proc.pid}) at {host}:{port}: it prints every "
        "notification email here; `make stop-smtp` stops it"
    )
    return 0


def main() -> int:
    if sys.argv[1:2] == ["--serve"]:
        asyncio.run(serve(sys.argv[2], int(sys.argv[3])))
        return 0
    from taskd.config import load_settings

    smtp = load_settings(sys.argv[1] if len(sys.argv) > 1 else None).notify.smtp
    if answers(smtp.host, smtp.port):
        print(f"SMTP answers at {smtp.host}:{smtp.port}")
        return 0
    if smtp.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"SMTP at {smtp.host}:{smtp.port} does not answer; emails wait and are retried")
        return 0
    return start(smtp.host, smtp.port)


if __name__ == "__main__":
    os.environ.setdefault("TASKD_LOG__JSON", "false")
    raise SystemExit(main())
