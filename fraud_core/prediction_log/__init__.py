"""The prediction log: every transaction the API scored, and the labels that come back for it.

Two tables per contract, created when missing, through SQLAlchemy on SQLite (the default,
`predictions.db` in the project; WAL mode so that the API and a reader share the file) or
PostgreSQL (`tables`):

    predictions  request_id, created_at (UTC), model_version, threshold, the 30 input fields,
                 fraud_probability, is_fraud (the decision at the model's threshold)
    feedback     request_id (-> predictions), label 'fraud'|'legit', labelled_at, source, comment,
                 key_id (the API key that sent it): the current label, what training reads
    card_predictions  transaction_id, created_at, model_version, threshold, tx_datetime, tx_us,
                 customer_id, terminal_id, amount, features (JSON), fraud_probability, is_fraud
    card_feedback     transaction_id (-> card_predictions), label, labelled_at, source, comment,
                 key_id
    label_events id, contract 'kaggle'|'cards', prediction_id, label, previous_label, key_id,
                 labelled_at, source, comment: every label and correction, append-only (`history`)

`api.prediction_log.PredictionLog` (the API's side: only the API writes) writes
predictions without ever making a request wait: `record()` puts rows on a bounded queue and a
thread of its own inserts them in batches. What happens to a row:

- the queue is full (the database is slower than the traffic): dropped at once, `queue_full`;
- the database is down: the batch in hand is retried with backoff while new rows wait in the
  queue, so a short outage loses nothing; a long one fills the queue, then drops as above;
- its request id is logged already (a client reused its X-Request-ID): the first row stays and
  the repeat is dropped, `duplicate_id` (retrying could never succeed);
- the database refuses it for good (a malformed row from a caller): dropped, `write_failed`;
- `close()` writes everything queued; what it still cannot write by its deadline is dropped,
  `write_failed`, with an ERROR line; rows recorded after `close()` are dropped, `closed`.

So `written + sum(dropped) == rows recorded`, always. Labels come back through `add_feedback`
(a conflicting label is refused unless the caller may correct it: `correct=True` replaces it and
the history keeps both);
the training side reads them in the transaction schema with `labelled_rows`, and drift detection
reads `recent_predictions` (`labels`). The card contract's rows go through the same writer;
`cards` has their labels (`add_card_feedback`) and readers (`labelled_card_transactions` for
training, `card_events` for the API's restart, `recent_card_predictions` for drift).
"""

from fraud_core.prediction_log.cards import (
    CARD_PROVENANCE_COLUMNS,
    CardFeedback,
    ConflictingCardLabel,
    UnknownTransactionId,
    add_card_feedback,
    card_events,
    card_labels,
    labelled_card_transactions,
    newest_card_tx_us,
    recent_card_predictions,
)
from fraud_core.prediction_log.history import (
    HISTORY_COLUMNS,
    NO_KEY,
    LabelSummary,
    label_history,
    label_summary,
)
from fraud_core.prediction_log.labels import (
    PROVENANCE_COLUMNS,
    ConflictingLabel,
    Feedback,
    FeedbackError,
    InvalidLabel,
    UnknownRequestId,
    add_feedback,
    labelled_rows,
    recent_predictions,
)
from fraud_core.prediction_log.tables import (
    CARD_ID_LENGTH,
    KEY_ID_LENGTH,
    LABELS,
    REQUEST_ID_LENGTH,
    CardPredictionRow,
    PredictionRow,
    card_feedback,
    card_predictions,
    create_tables,
    feedback,
    label_events,
    make_engine,
    metadata,
    predictions,
    resolve_url,
    upgrade_tables,
)

__all__ = [
    "CARD_ID_LENGTH",
    "CARD_PROVENANCE_COLUMNS",
    "HISTORY_COLUMNS",
    "KEY_ID_LENGTH",
    "LABELS",
    "NO_KEY",
    "PROVENANCE_COLUMNS",
    "REQUEST_ID_LENGTH",
    "CardFeedback",
    "CardPredictionRow",
    "ConflictingCardLabel",
    "ConflictingLabel",
    "Feedback",
    "FeedbackError",
    "InvalidLabel",
    "LabelSummary",
    "PredictionRow",
    "UnknownRequestId",
    "UnknownTransactionId",
    "add_card_feedback",
    "add_feedback",
    "card_events",
    "card_feedback",
    "card_labels",
    "card_predictions",
    "create_tables",
    "feedback",
    "label_events",
    "label_history",
    "label_summary",
    "labelled_card_transactions",
    "labelled_rows",
    "make_engine",
    "metadata",
    "newest_card_tx_us",
    "predictions",
    "recent_card_predictions",
    "recent_predictions",
    "resolve_url",
    "upgrade_tables",
]
