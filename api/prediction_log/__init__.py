"""The API's writer of the prediction log; its tables and readers are `fraud_core.prediction_log`.

Only the API writes predictions, so the writer lives here: `PredictionLog` queues rows and a
thread of its own inserts them in batches (`bulk`). See `fraud_core.prediction_log` for what
happens to a row.
"""

from api.prediction_log.writer import DROP_REASONS, LogStats, PredictionLog

__all__ = ["DROP_REASONS", "LogStats", "PredictionLog"]
