"""Email over SMTP (aiosmtplib): plain, STARTTLS or implicit TLS, with login when configured."""

from __future__ import annotations

from collections.abc import Sequence
from email.message import EmailMessage

import aiosmtplib

from taskd.config.settings import SmtpSettings
from taskd.errors import DeliveryFailed, DeliveryRefused

# SMTP replies that say the message can never go through as addressed. Authentication and
# other 5xx replies about the relay itself are operator problems: those are retried.
_PERMANENT_REPLIES = frozenset({501, 550, 551, 552, 553, 554, 555})


class EmailChannel:
    """One SMTP session per message: simple, and a relay outage costs no stale connections."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    async def send(self, message: EmailMessage, recipients: Sequence[str]) -> None:
        """Deliver ``message`` to ``recipients`` (the envelope); DeliveryFailed otherwise."""
        s = self.settings
        try:
            await aiosmtplib.send(
                message,
                sender=s.sender,
                recipients=list(recipients),
                hostname=s.host,
                port=s.port,
                username=s.username or None,
                password=s.password or None,
                use_tls=s.security == "tls",
                start_tls=s.security == "starttls",
                validate_certs=s.validate_certs,
                timeout=s.timeout_seconds,
            )
        except aiosmtplib.SMTPRecipientsRefused as e:
            codes = {r.code for r in e.recipients}
            text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in e.recipients)
            if codes <= _PERMANENT_REPLIES:
                raise DeliveryRefused(f"recipients refused: {text}") from e
            raise DeliveryFailed(f"recipients refused: {text}") from e
        except aiosmtplib.SMTPResponseException as e:
            error = DeliveryRefused if e.code in _PERMANENT_REPLIES else DeliveryFailed
            raise error(f"SMTP {s.host}:{s.port} answered {e.code} {e.message}") from e
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
            raise DeliveryFailed(f"SMTP {s.host}:{s.port}: {type(e).__name__}: {e}") from e
