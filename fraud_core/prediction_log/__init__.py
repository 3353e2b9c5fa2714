"""The prediction log: every transaction the API scored, and the labels that come back for it.

Two tables, created when missing, through SQLAlchemy on SQLite (the default, `predictions.db` in
the project; WAL mode so that the API and a reader share the file) or PostgreSQL (`tables`):

    predictions  request_id, created_at (UTC), model_version, threshold, the 30 input fields,
                 fraud_probability, is_fraud (the decision at the model's threshold)
    feedback     request_id (-> predictions), label 'fraud'|'legit', labelled_at, source, comment

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

So `written + sum(dropped) == rows recorded`, always. Labels come back through `add_feedback`;
the training side reads them in the transaction schema with `labelled_rows`, and drift detection
reads `recent_predictions` (`labels`).
"""

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
    LABELS,
    REQUEST_ID_LENGTH,
    PredictionRow,
    create_tables,
    feedback,
    make_engine,
    metadata,
    predictions,
    resolve_url,
)

__all__ = [
    "LABELS",
    "PROVENANCE_COLUMNS",
    "REQUEST_ID_LENGTH",
    "ConflictingLabel",
    "Feedback",
    "FeedbackError",
    "InvalidLabel",
    "PredictionRow",
    "UnknownRequestId",
    "add_feedback",
    "create_tables",
    "feedback",
    "labelled_rows",
    "make_engine",
    "metadata",
    "predictions",
    "recent_predictions",
    "resolve_url",
]
