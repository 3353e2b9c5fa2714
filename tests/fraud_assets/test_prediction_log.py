"""The prediction log against real SQLite and PostgreSQL: batching, drops, outages, labels."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from api.prediction_log import DROP_REASONS, PredictionLog
from fraud_core.prediction_log import (
    PROVENANCE_COLUMNS,
    ConflictingLabel,
    InvalidLabel,
    PredictionRow,
    UnknownRequestId,
    add_feedback,
    create_tables,
    feedback,
    labelled_rows,
    make_engine,
    predictions,
    recent_predictions,
    resolve_url,
)
from fraud_core.schema import COLUMNS, FEATURE_COLUMNS, LABEL, conform
from tests.conftest import fresh_database
from tests.prediction_log_db import database_down, writer_blocked

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
VERSION = "20260301T000000Z-test"
THRESHOLD = 0.4


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[str]:
    """A URL of an empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/log/predictions.db"  # the folder does not exist yet
    else:
        with fresh_database() as database:
            yield database


@pytest.fixture
def engine(url: str) -> Iterator[sa.Engine]:
    engine = make_engine(url)
    yield engine
    engine.dispose()


def row(i: int, request_id: str | None = None, probability: float | None = None) -> PredictionRow:
    """A distinct prediction: its features and score derived from `i`, made `i` seconds after T0."""
    features = np.arange(30, dtype=np.float64) * 0.5 + i
    features[-1] = abs(features[-1])  # Amount >= 0
    p = probability if probability is not None else (i % 97) / 97
    return PredictionRow(
        request_id or f"req-{i}",
        T0 + timedelta(seconds=i, microseconds=123),
        VERSION,
        THRESHOLD,
        features,
        p,
        p >= THRESHOLD,
    )


def table(engine: sa.Engine, which: sa.Table = predictions) -> list[sa.Row[tuple[object, ...]]]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(which).order_by(which.c.request_id)))


def settled(stats_written: int, dropped: dict[str, int]) -> int:
    return stats_written + sum(dropped.values())


# -- settings -----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [None, "", "  ", "off", "OFF", " off "])
def test_off_or_empty_turns_the_log_off(value: str | None) -> None:
    assert resolve_url(value) is None


def test_a_url_is_kept() -> None:
    assert resolve_url(" postgresql://u@h/db ") == "postgresql://u@h/db"


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(ValueError, match="SQLite file"):
        make_engine("sqlite://")


@pytest.mark.parametrize(
    "url", ["mysql://u@127.0.0.1/db", "postgresql+pg8000://u@127.0.0.1/db", "sqlite:///:memory:"]
)
def test_other_databases_are_refused_by_name(url: str) -> None:
    with pytest.raises(ValueError, match="prediction log"):
        make_engine(url)


@pytest.mark.parametrize(
    "url", ["not a url", "postgresql://u:s3cret@[::1", "mysql://u:s3cret@h/db"]
)
def test_a_bad_url_is_refused_without_showing_its_password(url: str) -> None:
    with pytest.raises(ValueError, match="prediction log") as refused:
        make_engine(url)
    assert "s3cret" not in str(refused.value)


def test_sqlite_is_shared_in_wal_mode(tmp_path: object) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/p.db", busy_timeout_s=1.5)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1500
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


# -- writing ------------------------------------------------------------------------------------
def test_recorded_rows_are_written_with_every_column(engine: sa.Engine) -> None:
    rows = [row(i) for i in range(7)]
    with PredictionLog(engine, batch_size=3) as log:
        assert log.record(rows[:4]) == 4
        assert log.record(rows[4:]) == 3
        assert log.flush(timeout=30)
        stats = log.stats()
    assert stats.written == 7
    assert stats.dropped == dict.fromkeys(DROP_REASONS, 0)
    stored = {r.request_id: r for r in table(engine)}
    assert set(stored) == {r.request_id for r in rows}
    for expected in rows:
        got = stored[expected.request_id]
        assert got.created_at == expected.created_at  # microseconds and zone kept
        assert got.created_at.tzinfo is not None
        assert got.model_version == VERSION
        assert got.threshold == THRESHOLD
        assert [getattr(got, name) for name in FEATURE_COLUMNS] == expected.features.tolist()
        assert got.fraud_probability == expected.fraud_probability
        assert got.is_fraud is expected.is_fraud


def test_times_and_text_round_trip_exactly(engine: sa.Engine) -> None:
    whole_second = row(1)._replace(created_at=datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC))
    naive = row(2)._replace(created_at=datetime(2026, 3, 1, 12, 0, 6, 7), model_version="modèle-ü")
    elsewhere = row(3)._replace(
        created_at=datetime(2026, 3, 1, 14, 0, 7, tzinfo=timezone(timedelta(hours=2)))
    )
    with PredictionLog(engine) as log:
        log.record([whole_second, naive, elsewhere])
    stored = {r.request_id: r for r in table(engine)}
    assert stored["req-1"].created_at == datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)
    assert stored["req-2"].created_at == datetime(2026, 3, 1, 12, 0, 6, 7, tzinfo=UTC)
    assert stored["req-2"].model_version == "modèle-ü"
    assert stored["req-3"].created_at == datetime(2026, 3, 1, 12, 0, 7, tzinfo=UTC)
    # Ordered by time as they happened, whatever zone they were given in.
    assert recent_predictions(engine)["request_id"].tolist() == ["req-1", "req-2", "req-3"]


def test_a_malformed_row_is_dropped_and_the_rest_of_its_batch_written(engine: sa.Engine) -> None:
    short = row(2)._replace(features=[1.0] * 29)
    text = row(3)._replace(fraud_probability="high")  # type: ignore[arg-type]
    with PredictionLog(engine, batch_size=10) as log:
        log.record([row(1), short, text, row(4)])
        assert log.flush(timeout=30)
        log.record([row(5)])  # the writer carries on
        assert log.flush(timeout=30)
        stats = log.stats()
    assert stats.written == 3
    assert stats.dropped["write_failed"] == 2
    assert [r.request_id for r in table(engine)] == ["req-1", "req-4", "req-5"]


def test_flush_does_not_wait_for_a_batch_to_fill(engine: sa.Engine) -> None:
    # One row, a batch of 500 and half a minute of latency: only the flush can write it in time.
    with PredictionLog(engine, batch_size=500, max_latency_s=30) as log:
        log.record([row(1)])
        assert log.flush(timeout=10)
        assert [r.request_id for r in table(engine)] == ["req-1"]


def test_close_writes_everything_queued(engine: sa.Engine) -> None:
    log = PredictionLog(engine, queue_size=10_000, batch_size=100, max_latency_s=10)
    assert log.record([row(i) for i in range(5_000)]) == 5_000
    log.close(timeout=120)
    assert log.stats().written == 5_000
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(predictions)) == 5_000
    # Once closed, rows are counted as dropped, not queued for a writer that is gone.
    assert log.record([row(9_999)]) == 0
    assert log.stats().dropped["closed"] == 1


def test_threads_recording_at_once_lose_nothing(engine: sa.Engine) -> None:
    with PredictionLog(engine, batch_size=64, max_latency_s=0.05) as log:

        def record(start: int) -> None:
            for i in range(start, start + 200):
                log.record([row(i)])

        threads = [threading.Thread(target=record, args=(t * 1_000,)) for t in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert log.stats().written == 1_200
    assert {r.request_id for r in table(engine)} == {
        f"req-{t * 1_000 + i}" for t in range(6) for i in range(200)
    }


def test_a_full_queue_drops_rows_and_counts_each_one(url: str, engine: sa.Engine) -> None:
    log = PredictionLog(engine, queue_size=10, batch_size=5, max_latency_s=0.05)
    log.record([row(0)])
    assert log.flush(timeout=30)
    with writer_blocked(url):
        recorded = sum(log.record([row(i)]) for i in range(1, 101))
        stats = log.stats()
        # The writer holds at most one batch while it waits; the queue holds the rest it can.
        assert stats.queued == 10
        assert stats.dropped["queue_full"] == 100 - recorded
        assert 100 - 10 - 5 <= stats.dropped["queue_full"] <= 100 - 10
    log.close(timeout=60)
    stats = log.stats()
    assert stats.written == 1 + recorded
    assert settled(stats.written, stats.dropped) == 101
    assert len(table(engine)) == stats.written


def test_rows_wait_out_a_database_outage(url: str) -> None:
    engine = make_engine(url, busy_timeout_s=0.05)
    log = PredictionLog(engine, batch_size=20, max_latency_s=0.05, retry_max_s=0.3)
    with database_down(url):
        log.record([row(i) for i in range(50)])
        assert not log.flush(timeout=1.0)
        assert log.stats().write_errors >= 1
        assert log.stats().written == 0
    assert log.flush(timeout=60)
    log.close()
    stats = log.stats()
    assert stats.written == 50
    assert stats.dropped == dict.fromkeys(DROP_REASONS, 0)
    assert len(table(engine)) == 50


def test_close_gives_up_on_a_dead_database_and_counts_what_it_lost(url: str) -> None:
    engine = make_engine(url, busy_timeout_s=0.05)
    log = PredictionLog(engine, batch_size=20, max_latency_s=0.05, retry_max_s=0.3)
    with database_down(url):
        log.record([row(i) for i in range(50)])
        log.close(timeout=1.0)
        stats = log.stats()
    assert stats.written == 0
    assert stats.dropped["write_failed"] == 50
    assert len(table(engine)) == 0


def test_a_reused_request_id_keeps_the_first_row_and_is_counted(engine: sa.Engine) -> None:
    with PredictionLog(engine, batch_size=10) as log:
        log.record([row(1, "same", probability=0.1)])
        assert log.flush(timeout=30)
        # A repeat of a logged id, and a repeat inside one batch, beside rows that are fine.
        log.record([row(2), row(3, "same", probability=0.9), row(4, "twice"), row(5, "twice")])
        assert log.flush(timeout=30)
        stats = log.stats()
    assert stats.written == 3
    assert stats.dropped["duplicate_id"] == 2
    stored = {r.request_id: r for r in table(engine)}
    assert set(stored) == {"same", "req-2", "twice"}
    assert stored["same"].fraud_probability == 0.1
    assert stored["twice"].created_at == row(4).created_at


# -- labels -------------------------------------------------------------------------------------
@pytest.fixture
def logged(engine: sa.Engine) -> sa.Engine:
    """Six predictions in the log (`req-0` … `req-5`), no labels."""
    with PredictionLog(engine) as log:
        log.record([row(i) for i in range(6)])
    return engine


def test_a_label_is_stored_once_and_repeating_it_is_harmless(logged: sa.Engine) -> None:
    stored = add_feedback(logged, "req-1", "fraud", source="chargeback", comment="card stolen")
    assert stored.created
    assert (stored.request_id, stored.label, stored.source) == ("req-1", "fraud", "chargeback")
    again = add_feedback(logged, "req-1", "fraud", source="analyst")
    assert not again.created
    # The first answer stands: its time and source.
    assert again.labelled_at == stored.labelled_at
    assert again.source == "chargeback"
    (only,) = table(logged, feedback)
    assert (only.label, only.source, only.comment) == ("fraud", "chargeback", "card stolen")
    assert only.labelled_at == stored.labelled_at


@pytest.mark.parametrize(
    ("request_id", "label", "error"),
    [
        ("req-404", "fraud", UnknownRequestId),
        ("req-2", "Fraud", InvalidLabel),
        ("req-2", "1", InvalidLabel),
        ("req-1", "legit", ConflictingLabel),
    ],
)
def test_a_bad_label_writes_nothing(
    logged: sa.Engine, request_id: str, label: str, error: type[Exception]
) -> None:
    add_feedback(logged, "req-1", "fraud")
    before = table(logged, feedback)
    with pytest.raises(error) as raised:
        add_feedback(logged, request_id, label)
    assert table(logged, feedback) == before
    if error is ConflictingLabel:
        assert "'fraud'" in str(raised.value) and "'legit'" in str(raised.value)
    else:
        assert repr(request_id if error is UnknownRequestId else label) in str(raised.value)


def test_labelled_rows_are_training_data_in_the_transaction_schema(logged: sa.Engine) -> None:
    add_feedback(logged, "req-4", "fraud", source="chargeback")
    add_feedback(logged, "req-1", "legit")
    add_feedback(logged, "req-2", "fraud")
    frame = labelled_rows(logged)
    assert list(frame.columns) == [*COLUMNS, *PROVENANCE_COLUMNS]
    # In the order they were scored; Class from the label.
    assert frame["request_id"].tolist() == ["req-1", "req-2", "req-4"]
    assert frame[LABEL].tolist() == [0, 1, 1]
    assert frame["label_source"].tolist() == [None, None, "chargeback"]
    for i, index in zip((1, 2, 4), frame.index, strict=True):
        assert frame.loc[index, list(FEATURE_COLUMNS)].tolist() == row(i).features.tolist()
        assert frame.loc[index, "fraud_probability"] == row(i).fraud_probability
        assert frame.loc[index, "predicted_at"] == row(i).created_at
    assert (frame["model_version"] == VERSION).all()
    assert str(frame["labelled_at"].dt.tz) == "UTC"
    # The training side's own validation takes it as it is.
    conformed = conform(frame)
    assert list(conformed.columns) == list(COLUMNS)
    assert conformed[LABEL].dtype == np.int8


def test_labelled_rows_since_a_time(logged: sa.Engine) -> None:
    add_feedback(logged, "req-1", "fraud", labelled_at=T0 + timedelta(days=1))
    add_feedback(logged, "req-3", "legit", labelled_at=T0 + timedelta(days=3))
    since = labelled_rows(logged, since=T0 + timedelta(days=2))
    assert since["request_id"].tolist() == ["req-3"]
    assert since["labelled_at"].tolist() == [pd.Timestamp(T0 + timedelta(days=3))]


def test_an_empty_database_reads_as_empty_frames(engine: sa.Engine) -> None:
    frame = labelled_rows(engine)
    assert list(frame.columns) == [*COLUMNS, *PROVENANCE_COLUMNS]
    assert len(frame) == 0
    assert len(recent_predictions(engine)) == 0
    create_tables(engine)
    assert len(labelled_rows(engine)) == 0


def test_recent_predictions_are_the_latest_oldest_first(logged: sa.Engine) -> None:
    latest = recent_predictions(logged, limit=3)
    assert latest["request_id"].tolist() == ["req-3", "req-4", "req-5"]
    assert latest.loc[0, list(FEATURE_COLUMNS)].tolist() == row(3).features.tolist()
    assert latest["fraud_probability"].tolist() == [row(i).fraud_probability for i in (3, 4, 5)]
    assert latest["is_fraud"].tolist() == [row(i).is_fraud for i in (3, 4, 5)]
    since = recent_predictions(logged, limit=None, since=T0 + timedelta(seconds=4))
    assert since["request_id"].tolist() == ["req-4", "req-5"]
    assert str(since["created_at"].dt.tz) == "UTC"
