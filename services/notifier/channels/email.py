"""E-mail over SMTP (stdlib ``smtplib`` in a worker thread): plain text, UTF-8.

A 4xx SMTP answer or a network fault is retried; a 5xx answer (recipient refused,
authentication failed) is permanent."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import httpx

from services.notifier.channels.base import Channel, Outcome, Result
from services.notifier.messages import Notice


def email_message(notice: Notice, from_addr: str, to: list[str]) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = notice.title
    msg["From"] = from_addr
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=from_addr.rsplit("@", 1)[-1])
    msg["X-Escalation-Id"] = notice.key
    msg.set_content(notice.text(), charset="utf-8")
    return msg


class EmailChannel(Channel):
    kind = "email"

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int,
        from_addr: str,
        to: list[str],
        starttls: bool = False,
        use_ssl: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        **kw: Any,
    ) -> None:
        super().__init__(name, **kw)
        self.host, self.port, self.from_addr, self.to = host, port, from_addr, to
        self.starttls, self.use_ssl = starttls, use_ssl
        self.username, self.password, self.timeout = username, password, timeout

    def _send_blocking(self, msg: EmailMessage) -> None:
        smtp: smtplib.SMTP
        if self.use_ssl:
            smtp = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username and self.password:
                smtp.login(self.username, self.password)
            smtp.send_message(msg, self.from_addr, self.to)

    async def send(self, client: httpx.AsyncClient, notice: Notice, now: float) -> Result:
        msg = email_message(notice, self.from_addr, self.to)
        try:
            await asyncio.to_thread(self._send_blocking, msg)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [c for c, _ in exc.recipients.values()]
            permanent = all(c >= 500 for c in codes)
            return Result(
                Outcome.failed if permanent else Outcome.retry, f"recipients refused: {codes}"
            )
        except smtplib.SMTPResponseException as exc:
            outcome = Outcome.failed if exc.smtp_code >= 500 else Outcome.retry
            return Result(outcome, f"SMTP {exc.smtp_code}", exc.smtp_code)
        except (smtplib.SMTPException, OSError) as exc:
            return Result(Outcome.retry, f"smtp: {exc.__class__.__name__}")
        return Result(Outcome.delivered, "sent")
