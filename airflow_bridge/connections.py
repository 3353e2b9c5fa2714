"""Slack and SMTP channels from the fields of Airflow's connections; no airflow import.

The DAG reads `slack_webhook_default` and `smtp_default` (when `FRAUD_SLACK_WEBHOOK_URL` /
`FRAUD_SMTP_HOST` are unset) and passes their fields here, read as the Slack and SMTP providers
read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fraud_notify import NotifySettings, SlackConfig, SmtpConfig, recipients

SLACK_HOOKS_URL = "https://hooks.slack.com/services"


def slack_from_connection(
    *, host: str | None, password: str | None, timeout_s: float = 10.0
) -> SlackConfig | None:
    """A Slack webhook from the fields of the connection `slack_webhook_default`.

    As the Slack provider reads it: the password holds the whole webhook URL, or the token
    (`T000/B000/XXX`) with the host as the base URL (default: Slack's hooks URL).
    """
    if not password:
        return None
    if password.startswith(("https://", "http://")):
        return SlackConfig(password, timeout_s)
    base = (host or SLACK_HOOKS_URL).rstrip("/")
    if "://" not in base:
        base = f"https://{base}"
    return SlackConfig(f"{base}/{password.lstrip('/')}", timeout_s)


def smtp_from_connection(
    *,
    host: str | None,
    port: int | None,
    login: str | None,
    password: str | None,
    extra: Mapping[str, Any],
    settings: NotifySettings,
) -> SmtpConfig | None:
    """An SMTP server from the fields of the connection `smtp_default`.

    As the SMTP provider reads it: TLS from the start unless `disable_ssl`, else STARTTLS unless
    `disable_tls`; the sender is `from_email`. Recipients: the extra `to`, else `FRAUD_SMTP_TO`.
    """
    if not host:
        return None
    use_ssl = not _flag(extra.get("disable_ssl"))
    return SmtpConfig(
        host=host,
        port=port or (465 if use_ssl else 25),
        sender=str(extra.get("from_email") or settings.smtp_from),
        recipients=recipients(str(extra.get("to") or settings.smtp_to)),
        user=login or None,
        password=password or None,
        use_ssl=use_ssl,
        starttls=not use_ssl and not _flag(extra.get("disable_tls")),
        timeout_s=float(extra.get("timeout") or settings.notify_timeout_s),
    )


def _flag(value: object) -> bool:
    return value is True or str(value).lower() in ("1", "true", "yes")
