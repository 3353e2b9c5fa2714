"""The audited label history: a poisoning label refused, corrected by a label:correct key, traced.

The scenario of issue 15: an early `legit` from a `feedback` key makes the true `fraud` (a
chargeback, from another `feedback` key) answer 409; an analyst's `label:correct` key corrects
it; the history keeps both entries with both key ids, and the next training read (`labelled_rows`,
the `labelled_transactions` asset) has the corrected label. The card contract's online state
learns the correction too. Databases from before `key_id` are upgraded in place.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.main import create_app
from fraud_assets.defs.assets.labels import labelled_transactions
from fraud_core.api_keys import FEEDBACK, LABEL_CORRECT, parse
from fraud_core.bundle import FraudModel
from fraud_core.contracts import CARDS, KAGGLE
from fraud_core.prediction_log import (
    ConflictingLabel,
    add_feedback,
    create_tables,
    feedback,
    label_history,
    label_summary,
    labelled_card_transactions,
    labelled_rows,
    make_engine,
    predictions,
)
from fraud_core.store import ModelStore
from tests.api.conftest import (
    bearer,
    card_transaction,
    default_log_url,
    make_settings,
    metric,
    new_key,
    scrape,
    transaction,
)
from tests.api.test_card_feedback import DELAY_H, features
from tests.api.test_transactions import at
from tests.conftest import make_resources
from tests.fraud_core.cards.state_support import REDIS_URL, redis_problem

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")


def key_id(key: str) -> str:
    parsed = parse(key)
    assert parsed is not None
    return parsed[0]


class Keys:
    """The three senders of the scenario, as keys in the app's prediction log."""

    def __init__(self, url: str) -> None:
        self.early = new_key(url, FEEDBACK, name="merchant-portal")
        self.chargebacks = new_key(url, FEEDBACK, name="chargebacks")
        self.analyst = new_key(url, FEEDBACK, LABEL_CORRECT, name="analyst:ana")


def label(client: TestClient, key: str, label: str, **target: str) -> Any:
    return client.post("/feedback", json={**target, "label": label}, headers=bearer(key))


@pytest.fixture
def kaggle(store: ModelStore, served_model: FraudModel) -> Iterator[tuple[TestClient, Keys]]:
    keys = Keys(default_log_url(store.root))
    with TestClient(create_app(make_settings(store.root))) as client:
        yield client, keys


def test_a_poisoning_label_is_corrected_with_a_trace_and_training_reads_the_correction(
    kaggle: tuple[TestClient, Keys], store: ModelStore, tmp_path: Path
) -> None:
    client, keys = kaggle
    request_id = client.post("/predict", json=transaction(V14=-6.0)).json()["request_id"]
    target = {"request_id": request_id}
    # The poisoner gets there first.
    early = label(client, keys.early, "legit", **target, source="merchant")
    assert early.status_code == 201, early.text
    # The true label, from a key that may only send labels: refused, nothing written.
    refused = label(client, keys.chargebacks, "fraud", **target, source="chargeback")
    assert refused.status_code == 409
    assert "label:correct" in refused.json()["detail"]
    url = default_log_url(store.root)
    engine = make_engine(url)
    try:
        assert len(label_history(engine, KAGGLE, request_id)) == 1
        # The analyst corrects it.
        corrected = label(
            client, keys.analyst, "fraud", **target, source="analyst", comment="chargeback 0042"
        )
        assert corrected.status_code == 200, corrected.text
        body = corrected.json()
        assert body["corrected"] is True and body["previous_label"] == "legit"
        assert body["created"] is True and body["key_id"] == key_id(keys.analyst)
        # The same label again from anyone: nothing changes, nothing appended.
        again = label(client, keys.chargebacks, "fraud", **target)
        assert again.status_code == 200 and again.json()["created"] is False
        assert again.json()["key_id"] == key_id(keys.analyst)

        history = label_history(engine, KAGGLE, request_id)
        assert history["label"].tolist() == ["legit", "fraud"]
        assert history["previous_label"].tolist() == [None, "legit"]
        assert history["key_id"].tolist() == [key_id(keys.early), key_id(keys.analyst)]
        assert history["source"].tolist() == ["merchant", "analyst"]
        assert history["labelled_at"].is_monotonic_increasing
        # The current label, which training reads, is the correction.
        rows = labelled_rows(engine)
        assert rows.set_index("request_id").loc[request_id, "Class"] == 1
        assert rows.set_index("request_id").loc[request_id, "label_key_id"] == key_id(keys.analyst)
        summary = label_summary(engine, KAGGLE)
        assert summary.corrections == summary.corrected_predictions == 1
        assert summary.by_key == {key_id(keys.analyst): 1}
        assert summary.events_by_key == {key_id(keys.early): 1, key_id(keys.analyst): 1}
    finally:
        engine.dispose()
    samples = scrape(client)
    assert metric(samples, "fraud_api_label_corrections_total") == 1
    assert metric(samples, "fraud_api_feedback_total", label="legit") == 1

    # The next retrain's read of the labels: the corrected one, and the metadata says who.
    result = dg.materialize(
        [labelled_transactions],
        resources=make_resources(tmp_path, prediction_log_url=url, contract=KAGGLE),
    )
    frame = result.output_for_node("labelled_transactions")
    assert frame["Class"].tolist() == [1]
    (materialization,) = result.asset_materializations_for_node("labelled_transactions")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert meta["corrections"] == 1
    assert meta["by_key"] == {key_id(keys.analyst): 1}


@pytest.fixture(params=["memory", "redis"])
def state_settings(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The card state in process, or in Redis under a prefix of the test's own (deleted after)."""
    if request.param == "memory":
        yield {"FRAUD_FEATURE_STATE_SNAPSHOT": "off"}
        return
    if redis_problem() is not None:
        pytest.skip(str(redis_problem()))
    prefix = f"test-history-{uuid.uuid4().hex[:12]}"
    yield {"FRAUD_FEATURE_STATE": REDIS_URL, "FRAUD_FEATURE_STATE_PREFIX": prefix}
    with redis.Redis.from_url(REDIS_URL) as client:
        for pattern in (f"{{{prefix}}}:*", f"{prefix}:*"):
            stale = list(client.scan_iter(match=pattern, count=1000))
            if stale:
                client.unlink(*stale)


def test_a_card_correction_reaches_the_online_state(
    store: ModelStore, card_model: FraudModel, state_settings: dict[str, str]
) -> None:
    keys = Keys(default_log_url(store.root))
    terminal = {"terminal_id": "t-poisoned"}
    with TestClient(create_app(make_settings(store.root, **state_settings))) as client:
        features(client, card_transaction("P", at(0), customer_id="cp", **terminal))
        assert label(client, keys.early, "legit", transaction_id="P").status_code == 201
        assert label(client, keys.chargebacks, "fraud", transaction_id="P").status_code == 409
        later = features(
            client, card_transaction("Q", at(DELAY_H + 1), customer_id="cq", **terminal)
        )
        assert later["TERMINAL_ID_RISK_1DAY_WINDOW"] == 0.0  # the poisoned label counts
        corrected = label(client, keys.analyst, "fraud", transaction_id="P")
        assert corrected.status_code == 200 and corrected.json()["previous_label"] == "legit"
        # A transaction after the delay now sees P as the fraud it was.
        after = features(
            client, card_transaction("R", at(DELAY_H + 2), customer_id="cr", **terminal)
        )
        assert after["TERMINAL_ID_NB_TX_1DAY_WINDOW"] == 1.0
        assert after["TERMINAL_ID_RISK_1DAY_WINDOW"] == 1.0
    engine = make_engine(default_log_url(store.root))
    try:
        frame = labelled_card_transactions(engine).set_index("transaction_id")
        assert frame.loc["P", "is_fraud"] == 1
        assert frame.loc["P", "label_key_id"] == key_id(keys.analyst)
        history = label_history(engine, CARDS, "P")
        assert history["key_id"].tolist() == [key_id(keys.early), key_id(keys.analyst)]
        assert label_summary(engine, CARDS).corrections == 1
        assert len(label_history(engine, KAGGLE)) == 0
    finally:
        engine.dispose()


def prediction_row(request_id: str) -> dict[str, Any]:
    """A `predictions` row, written as it is: no writer that would create or upgrade tables."""
    return {
        "request_id": request_id,
        "created_at": datetime.now(UTC),
        "model_version": "v0",
        "threshold": 0.5,
        **transaction(),
        "fraud_probability": 0.1,
        "is_fraud": False,
    }


#: The `feedback` table as the prediction log created it before labels carried a key id.
OLD_FEEDBACK = """
CREATE TABLE feedback (
    request_id VARCHAR(100) NOT NULL PRIMARY KEY REFERENCES predictions (request_id),
    label VARCHAR(5) NOT NULL,
    labelled_at TIMESTAMP {tz} NOT NULL,
    source VARCHAR(200),
    comment TEXT,
    CONSTRAINT feedback_label CHECK (label IN ('fraud', 'legit'))
)
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """A prediction log made before key ids: `predictions` as now, `feedback` without `key_id`,
    one label in it, and no `label_events`."""
    url = (
        f"sqlite:///{tmp_path / 'old.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = make_engine(url)
    predictions.create(engine)
    tz = "WITH TIME ZONE" if engine.dialect.name == "postgresql" else ""
    with engine.begin() as conn:
        conn.exec_driver_sql(OLD_FEEDBACK.format(tz=tz))
    with engine.begin() as conn:
        conn.execute(predictions.insert(), [prediction_row(f"old-{i}") for i in range(3)])
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO feedback (request_id, label, labelled_at, source) "
                "VALUES ('old-0', 'legit', :at, 'before keys')"
            ),
            {"at": "2025-01-01 00:00:00"},
        )
    yield engine
    engine.dispose()


def test_a_database_from_before_key_ids_is_upgraded_in_place(old_database: sa.Engine) -> None:
    engine = old_database
    assert "key_id" not in {c["name"] for c in sa.inspect(engine).get_columns("feedback")}
    # Training reads it (the column added on the way): the old label, without a key.
    [old] = labelled_rows(engine).itertuples(index=False)
    assert (old.request_id, old.Class, old.label_key_id) == ("old-0", 0, None)
    create_tables(engine)
    create_tables(engine)  # again, as a second worker starting does: nothing to add
    columns = {c["name"] for c in sa.inspect(engine).get_columns("feedback")}
    assert "key_id" in columns and sa.inspect(engine).has_table("label_events")
    # New labels carry their key; the old one can be corrected, its label kept as the previous.
    assert add_feedback(engine, "old-1", "fraud", key_id="a" * 12).created
    with pytest.raises(ConflictingLabel):
        add_feedback(engine, "old-0", "fraud", key_id="b" * 12)
    fixed = add_feedback(engine, "old-0", "fraud", key_id="c" * 12, correct=True)
    assert fixed.corrected and fixed.previous_label == "legit"
    with engine.connect() as conn:
        query = sa.select(feedback.c.request_id, feedback.c.key_id)
        rows = {str(r.request_id): r.key_id for r in conn.execute(query)}
    assert rows == {"old-0": "c" * 12, "old-1": "a" * 12}
    history = label_history(engine, KAGGLE)
    assert history[["prediction_id", "label", "previous_label"]].values.tolist() == [
        ["old-1", "fraud", None],
        ["old-0", "fraud", "legit"],
    ]


def test_labels_sent_at_once_store_one_and_history_one_entry_each(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    create_tables(engine)
    with engine.begin() as conn:
        conn.execute(predictions.insert(), [prediction_row("race")])
    outcomes: list[str] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        wanted = "fraud" if i % 2 else "legit"
        try:
            stored = add_feedback(engine, "race", wanted, key_id=f"{i:012d}", correct=i >= 8)
            outcome = "corrected" if stored.corrected else "created" if stored.created else "same"
        except ConflictingLabel:
            outcome = "conflict"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(12)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        history = label_history(engine, KAGGLE, "race")
        assert len(outcomes) == 12 and outcomes.count("created") == 1
        # One entry per label stored: the first, and each correction, each naming what it replaced.
        assert len(history) == 1 + outcomes.count("corrected")
        labels = history["label"].tolist()
        assert history["previous_label"].tolist() == [None, *labels[:-1]]
        with engine.connect() as conn:
            current = conn.execute(sa.select(feedback.c.label, feedback.c.key_id)).one()
        assert tuple(current) == (labels[-1], history["key_id"].iloc[-1])
    finally:
        engine.dispose()
