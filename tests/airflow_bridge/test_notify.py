"""Slack and e-mail against real local receivers: sent, skipped when unset, failures contained."""

from __future__ import annotations

import logging

import pytest

import fraud_notify as notify
from airflow_bridge import connections, message
from fraud_notify import NotifySettings, SlackConfig, SmtpConfig
from tests.airflow_bridge._airflow_env import (
    FakeDagster,
    build,
    outcomes_for,
    smtp_receiver,
    webhook_receiver,
)
from tests.conftest import free_port


@pytest.fixture
def promoted() -> message.Message:
    return build(outcomes_for(FakeDagster()))


@pytest.fixture
def blocked() -> message.Message:
    return build(outcomes_for(FakeDagster(script={"validate_data": "blocked"})))


def smtp(host: str, port: int, **kwargs: object) -> SmtpConfig:
    return SmtpConfig(
        host=host,
        port=port,
        sender="airflow@fraud.test",
        recipients=("team@fraud.test", "oncall@fraud.test"),
        timeout_s=5,
        **kwargs,  # type: ignore[arg-type]
    )


def test_slack_and_email_carry_the_decision_and_metrics(promoted: message.Message) -> None:
    with webhook_receiver() as slack, smtp_receiver() as box:
        results = notify.deliver(promoted, SlackConfig(slack.url), smtp(box.host, box.port))
        assert [(r.channel, r.status) for r in results] == [("slack", "sent"), ("email", "sent")]

        [body] = slack.bodies
        assert body["text"].startswith(f"*{promoted.subject}*\n")
        assert "PROMOTED" in body["text"]
        assert "average precision: 0.8200 (was 0.7900, +0.0300)" in body["text"]

        [email] = box.messages
    assert email["Subject"] == promoted.subject
    assert email["From"] == "airflow@fraud.test"
    assert email["To"] == "team@fraud.test, oncall@fraud.test"
    content = email.get_content()
    assert "Decision: promoted" in content
    assert "AP gain over production on the same rows: +0.0300" in content
    assert "MLflow run: http://127.0.0.1:5000/" in content


def test_unconfigured_channels_are_skipped_with_a_log_line(
    promoted: message.Message, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fraud_notify.channels")
    results = notify.deliver(promoted, None, None)
    assert [(r.channel, r.status) for r in results] == [
        ("slack", "skipped"),
        ("email", "skipped"),
    ]
    assert "Slack: not configured (FRAUD_SLACK_WEBHOOK_URL" in caplog.text
    assert "E-mail: not configured (FRAUD_SMTP_HOST" in caplog.text


def test_email_without_recipients_is_skipped(
    promoted: message.Message, caplog: pytest.LogCaptureFixture
) -> None:
    with smtp_receiver() as box:
        config = SmtpConfig(host=box.host, port=box.port, sender="a@b", recipients=())
        [_, email] = notify.deliver(promoted, None, config)
        assert box.messages == []
    assert (email.status, email.detail) == ("skipped", "no recipients")
    assert "no recipient (FRAUD_SMTP_TO); skipped" in caplog.text


def test_failing_receivers_are_logged_and_never_raise(
    blocked: message.Message, caplog: pytest.LogCaptureFixture
) -> None:
    with webhook_receiver(status=500) as slack, smtp_receiver(refuse=True) as box:
        results = notify.deliver(blocked, SlackConfig(slack.url), smtp(box.host, box.port))
        assert len(slack.bodies) == 1  # it was tried
    assert [(r.channel, r.status) for r in results] == [("slack", "failed"), ("email", "failed")]
    assert results[0].detail == "the webhook answered HTTP 500: internal_error"
    assert "554" in results[1].detail
    assert "Slack: the notification was not sent: the webhook answered HTTP 500" in caplog.text
    assert "E-mail: the notification was not sent via 127.0.0.1" in caplog.text
    # The webhook URL is a secret: it stays out of the log.
    assert "/services/T0/B0/X0" not in caplog.text


def test_unreachable_receivers_fail_fast_and_never_raise(blocked: message.Message) -> None:
    closed = free_port()
    results = notify.deliver(
        blocked,
        SlackConfig(f"http://127.0.0.1:{closed}/hook", timeout_s=5),
        smtp("127.0.0.1", closed),
    )
    assert [r.status for r in results] == ["failed", "failed"]
    assert "ConnectError" in results[0].detail
    assert "ConnectionRefusedError" in results[1].detail


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUD_SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/X")
    monkeypatch.setenv("FRAUD_SMTP_HOST", "mail.fraud.test")
    monkeypatch.setenv("FRAUD_SMTP_PORT", "587")
    monkeypatch.setenv("FRAUD_SMTP_STARTTLS", "true")
    monkeypatch.setenv("FRAUD_SMTP_USER", "airflow")
    monkeypatch.setenv("FRAUD_SMTP_PASSWORD", "s3cret")
    monkeypatch.setenv("FRAUD_SMTP_TO", "a@fraud.test, b@fraud.test")
    settings = NotifySettings()
    assert notify.slack_from_settings(settings) == SlackConfig(
        "https://hooks.slack.com/services/T/B/X"
    )
    assert notify.smtp_from_settings(settings) == SmtpConfig(
        host="mail.fraud.test",
        port=587,
        sender="fraud-platform@localhost",
        recipients=("a@fraud.test", "b@fraud.test"),
        user="airflow",
        password="s3cret",
        use_ssl=False,
        starttls=True,
    )


def test_nothing_configured_means_no_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FRAUD_SLACK_WEBHOOK_URL", "FRAUD_SMTP_HOST"):
        monkeypatch.delenv(name, raising=False)
    settings = NotifySettings(_env_file=None)  # type: ignore[call-arg]
    assert notify.slack_from_settings(settings) is None
    assert notify.smtp_from_settings(settings) is None


def test_slack_from_the_airflow_connection() -> None:
    hooks = "https://hooks.slack.com/services"
    assert connections.slack_from_connection(host=None, password="T0/B0/X0") == SlackConfig(
        f"{hooks}/T0/B0/X0"
    )
    assert connections.slack_from_connection(
        host="chat.example.com/hooks", password="T0/B0/X0"
    ) == SlackConfig("https://chat.example.com/hooks/T0/B0/X0")
    assert connections.slack_from_connection(host=None, password=f"{hooks}/T/B/X") == SlackConfig(
        f"{hooks}/T/B/X"
    )
    assert connections.slack_from_connection(host="hooks.slack.com", password=None) is None


def test_smtp_from_the_airflow_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUD_SMTP_TO", "team@fraud.test")
    settings = NotifySettings()
    # As the SMTP provider reads smtp_default: TLS from the start unless disabled.
    secure = connections.smtp_from_connection(
        host="smtp.fraud.test", port=None, login="u", password="p", extra={}, settings=settings
    )
    assert secure is not None
    assert (secure.port, secure.use_ssl, secure.starttls) == (465, True, False)
    assert secure.recipients == ("team@fraud.test",)
    plain = connections.smtp_from_connection(
        host="smtp.fraud.test",
        port=2525,
        login=None,
        password=None,
        extra={"disable_ssl": "true", "disable_tls": True, "from_email": "af@x", "to": "o@x"},
        settings=settings,
    )
    assert plain is not None
    assert (plain.port, plain.use_ssl, plain.starttls, plain.user) == (2525, False, False, None)
    assert (plain.sender, plain.recipients) == ("af@x", ("o@x",))
    assert (
        connections.smtp_from_connection(
            host=None, port=None, login=None, password=None, extra={}, settings=settings
        )
        is None
    )
