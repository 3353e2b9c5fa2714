"""Slack and e-mail notifications, shared by the Dagster code location and the Airflow DAG.

A neutral package: it imports neither side (only httpx, pydantic-settings and the standard
library), so each image copies it beside its own package and neither imports the other.
"""

from fraud_notify.channels import (
    ChannelResult,
    Message,
    Notification,
    NotifySettings,
    SlackConfig,
    SmtpConfig,
    deliver,
    recipients,
    send_email,
    send_slack,
    slack_from_settings,
    smtp_from_settings,
)

__all__ = [
    "ChannelResult",
    "Message",
    "Notification",
    "NotifySettings",
    "SlackConfig",
    "SmtpConfig",
    "deliver",
    "recipients",
    "send_email",
    "send_slack",
    "slack_from_settings",
    "smtp_from_settings",
]
