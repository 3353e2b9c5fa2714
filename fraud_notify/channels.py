"""Slack and e-mail: the two channels, their settings, and `deliver`.

Each channel is configured from the environment (`FRAUD_SLACK_WEBHOOK_URL`, `FRAUD_SMTP_*`); the
Airflow DAG can also build them from its connections (`airflow_bridge.connections`). A channel
that is not configured is skipped with a log line. `deliver` never raises: a notification that
cannot be sent is logged and reported, and never hides the result it reports.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Literal, Protocol

import httpx
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)


class Message(Protocol):
    """What a channel sends: a subject line and a plain-text body."""

    @property
    def subject(self) -> str: ...

    @property
    def text(self) -> str: ...


@dataclass(frozen=True)
class Notification:
    """A plain message, for senders that have nothing more to say than a subject and a text."""

    subject: str
    text: str


class NotifySettings(BaseSettings):
    """The channels' variables, each `FRAUD_<NAME>`; all optional."""

    model_config = SettingsConfigDict(env_prefix="FRAUD_", env_file=".env", extra="ignore")

    slack_webhook_url: str = ""
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_from: str = "fraud-platform@localhost"
    #: Comma-separated recipients.
    smtp_to: str = ""
    #: TLS from the first byte (usually port 465) / STARTTLS after connecting (usually 587).
    smtp_ssl: bool = False
    smtp_starttls: bool = False
    #: Seconds to wait for the Slack webhook or the SMTP server.
    notify_timeout_s: float = 10.0


@dataclass(frozen=True)
class SlackConfig:
    webhook_url: str
    timeout_s: float = 10.0


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    user: str | None = None
    password: str | None = None
    use_ssl: bool = False
    starttls: bool = False
    timeout_s: float = 10.0


@dataclass(frozen=True)
class ChannelResult:
    """What happened to one channel: sent, skipped (not configured) or failed (and why)."""

    channel: str
    status: Literal["sent", "skipped", "failed"]
    detail: str = ""


def recipients(value: str) -> tuple[str, ...]:
    """The addresses of a comma-separated list."""
    return tuple(r.strip() for r in value.split(",") if r.strip())


def slack_from_settings(settings: NotifySettings) -> SlackConfig | None:
    if not settings.slack_webhook_url:
        return None
    return SlackConfig(settings.slack_webhook_url, settings.notify_timeout_s)


def smtp_from_settings(settings: NotifySettings) -> SmtpConfig | None:
    if not settings.smtp_host:
        return None
    return SmtpConfig(
        host=settings.smtp_host,
        port=settings.smtp_port,
        sender=settings.smtp_from,
        recipients=recipients(settings.smtp_to),
        user=settings.smtp_user or None,
        password=settings.smtp_password or None,
        use_ssl=settings.smtp_ssl,
        starttls=settings.smtp_starttls,
        timeout_s=settings.notify_timeout_s,
    )


def send_slack(config: SlackConfig, message: Message) -> None:
    """POST the message to a Slack incoming webhook; raises on an HTTP error."""
    response = httpx.post(
        config.webhook_url,
        json={"text": f"*{message.subject}*\n```\n{message.text}```"},
        timeout=config.timeout_s,
    )
    response.raise_for_status()


def send_email(config: SmtpConfig, message: Message) -> None:
    """Send the message as a plain-text e-mail; raises on an SMTP or connection error."""
    email = EmailMessage()
    email["Subject"] = message.subject
    email["From"] = config.sender
    email["To"] = ", ".join(config.recipients)
    email.set_content(message.text)
    server: smtplib.SMTP
    if config.use_ssl:
        context = ssl.create_default_context()
        server = smtplib.SMTP_SSL(
            config.host, config.port, timeout=config.timeout_s, context=context
        )
    else:
        server = smtplib.SMTP(config.host, config.port, timeout=config.timeout_s)
    with server:
        if config.starttls:
            server.starttls(context=ssl.create_default_context())
        if config.user:
            server.login(config.user, config.password or "")
        server.send_message(email)


def deliver(
    message: Message, slack: SlackConfig | None, smtp: SmtpConfig | None
) -> list[ChannelResult]:
    """Send the message on every configured channel; never raises, logs each channel's fate."""
    results: list[ChannelResult] = []
    if slack is None:
        log.info(
            "Slack: not configured (FRAUD_SLACK_WEBHOOK_URL or the Airflow connection "
            "slack_webhook_default); skipped"
        )
        results.append(ChannelResult("slack", "skipped", "not configured"))
    else:
        try:
            send_slack(slack, message)
        except httpx.HTTPError as exc:
            # Not str(exc) of a status error: it holds the webhook URL, which is the secret.
            detail = (
                f"the webhook answered HTTP {exc.response.status_code}: {exc.response.text[:200]}"
                if isinstance(exc, httpx.HTTPStatusError)
                else _describe(exc)
            )
            log.error("Slack: the notification was not sent: %s", detail)
            results.append(ChannelResult("slack", "failed", detail))
        else:
            log.info("Slack: notification sent")
            results.append(ChannelResult("slack", "sent"))

    if smtp is None:
        log.info(
            "E-mail: not configured (FRAUD_SMTP_HOST or the Airflow connection smtp_default); "
            "skipped"
        )
        results.append(ChannelResult("email", "skipped", "not configured"))
    elif not smtp.recipients:
        log.warning("E-mail: %s is set but no recipient (FRAUD_SMTP_TO); skipped", smtp.host)
        results.append(ChannelResult("email", "skipped", "no recipients"))
    else:
        try:
            send_email(smtp, message)
        except (smtplib.SMTPException, OSError) as exc:
            log.error(
                "E-mail: the notification was not sent via %s:%s: %s",
                smtp.host,
                smtp.port,
                _describe(exc),
            )
            results.append(ChannelResult("email", "failed", _describe(exc)))
        else:
            log.info("E-mail: notification sent to %s", ", ".join(smtp.recipients))
            results.append(ChannelResult("email", "sent"))
    return results


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
