"""The card-transactions contract's behavioural features: one definition for both paths.

The offline path (`fraud_core.cards.features`, the whole history at once, vectorised) and the
online path (`fraud_core.cards.state`, one transaction at a time, from per-customer and
per-terminal state) both compute exactly what is written here. The names are the
Fraud-Detection-Handbook's baseline features, so results can be compared with the book.

Time is an integer count of microseconds since the Unix epoch, UTC (`tx_us`): comparisons at the
window edges are exact and the same in numpy, Python and Redis (whose scores are doubles: exact
below 2**53 µs, the year 2255).

For a transaction x at time t with id i, in the total order (time, transaction_id as a string):

- `TX_AMOUNT` = its amount; `TX_DURING_WEEKEND` = 1 on Saturday or Sunday (UTC), else 0;
  `TX_DURING_NIGHT` = 1 when the UTC hour is <= `night_end_hour` (6), else 0.
- For each customer window w (days): over the customer's transactions y with
  t - w < y.t and (y.t, y.id) <= (t, i), i.e. the window (t - w, t] with ties at t ordered by id,
  x itself included:
  `CUSTOMER_ID_NB_TX_{w}DAY_WINDOW` = their count (>= 1) and
  `CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW` = their mean amount.
- For each terminal window w, with the label delay d (days): over the terminal's transactions y
  with t - d - w < y.t <= t - d (every such y precedes x since d > 0):
  `TERMINAL_ID_NB_TX_{w}DAY_WINDOW` = their count and
  `TERMINAL_ID_RISK_{w}DAY_WINDOW` = (their frauds) / count, 0.0 when the count is 0.
  A label counts only once it could have been known: every y here is at least d older than x.

A transaction of the data set is in the history of every later one; ids are unique.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: The raw fields of a card transaction (the contract's canonical column names).
TRANSACTION_ID = "transaction_id"
TX_DATETIME = "tx_datetime"
CUSTOMER_ID = "customer_id"
TERMINAL_ID = "terminal_id"
AMOUNT = "amount"
LABEL = "is_fraud"
#: The time as int64 microseconds since the epoch (UTC), computed from `tx_datetime`.
TX_US = "tx_us"
#: The fields a transaction carries when it is scored, and the columns of a labelled file.
REQUEST_FIELDS: tuple[str, ...] = (TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID, TERMINAL_ID, AMOUNT)
COLUMNS: tuple[str, ...] = (*REQUEST_FIELDS, LABEL)
#: The canonical frame's columns, in order (`fraud_core.cards.schema.conform`; `is_fraud` only
#: when labelled).
CANONICAL_COLUMNS: tuple[str, ...] = (
    TRANSACTION_ID,
    TX_DATETIME,
    TX_US,
    CUSTOMER_ID,
    TERMINAL_ID,
    AMOUNT,
    LABEL,
)
#: A labelled history as both paths read it: what the offline features need, what the online
#: state's `load_history` takes, and a bundle's `history.parquet`.
HISTORY_COLUMNS: tuple[str, ...] = (TRANSACTION_ID, TX_US, CUSTOMER_ID, TERMINAL_ID, AMOUNT, LABEL)

US_PER_DAY = 86_400 * 1_000_000


@dataclass(frozen=True)
class FeatureDefinition:
    """Windows, delay and night hours of the behavioural features: recorded in every bundle."""

    customer_windows_days: tuple[int, ...] = (1, 7, 30)
    terminal_windows_days: tuple[int, ...] = (1, 7, 30)
    delay_days: int = 7
    night_end_hour: int = 6
    #: How far behind the newest transaction seen a late one may still be scored (days).
    max_lateness_days: int = 30
    version: int = field(default=1)

    def __post_init__(self) -> None:
        windows = (*self.customer_windows_days, *self.terminal_windows_days)
        if not self.customer_windows_days or not self.terminal_windows_days:
            raise ValueError("at least one customer and one terminal window are needed")
        if any(w <= 0 for w in windows) or len(set(self.customer_windows_days)) != len(
            self.customer_windows_days
        ):
            raise ValueError(f"windows must be distinct positive days: {windows}")
        if len(set(self.terminal_windows_days)) != len(self.terminal_windows_days):
            raise ValueError(f"terminal windows must be distinct: {self.terminal_windows_days}")
        if self.delay_days <= 0:
            raise ValueError("the label delay must be at least one day")
        if not 0 <= self.night_end_hour <= 23:
            raise ValueError("night_end_hour must be an hour of the day, 0-23")
        if self.max_lateness_days < 0:
            raise ValueError("max_lateness_days cannot be negative")

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The classifier's input columns, in model order (the Handbook's order)."""
        names = ["TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT"]
        for w in self.customer_windows_days:
            names += [f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW", f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"]
        for w in self.terminal_windows_days:
            names += [f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW", f"TERMINAL_ID_RISK_{w}DAY_WINDOW"]
        return tuple(names)

    @property
    def horizon_us(self) -> int:
        """How far back a transaction's features look: the longest window (plus delay)."""
        return US_PER_DAY * max(
            max(self.customer_windows_days), self.delay_days + max(self.terminal_windows_days)
        )

    @property
    def max_lateness_us(self) -> int:
        return US_PER_DAY * self.max_lateness_days

    @property
    def retention_us(self) -> int:
        """What the online state keeps behind the newest transaction, and the idle-key rule.

        A transaction up to `max_lateness` behind the newest one needs `horizon` behind itself;
        anything older can never enter a window again: events older are dropped, and a key whose
        newest event is older is evicted (offline, such a key contributes nothing either).
        """
        return self.horizon_us + self.max_lateness_us

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["feature_names"] = list(self.feature_names)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureDefinition:
        return cls(
            customer_windows_days=tuple(data["customer_windows_days"]),
            terminal_windows_days=tuple(data["terminal_windows_days"]),
            delay_days=int(data["delay_days"]),
            night_end_hour=int(data["night_end_hour"]),
            max_lateness_days=int(data.get("max_lateness_days", 30)),
            version=int(data.get("version", 1)),
        )


DEFAULT = FeatureDefinition()


def calendar_flags(tx_us: int, night_end_hour: int) -> tuple[float, float]:
    """(`TX_DURING_WEEKEND`, `TX_DURING_NIGHT`) of one time, by integer arithmetic (UTC).

    `calendar_arrays` is the same rule over arrays; both avoid datetime objects, whose
    conversions would be the only place the two paths could disagree.
    """
    day, in_day = divmod(tx_us, US_PER_DAY)
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0)
    hour = in_day // 3_600_000_000
    return (1.0 if weekday >= 5 else 0.0, 1.0 if hour <= night_end_hour else 0.0)


def calendar_arrays(tx_us: Any, night_end_hour: int) -> tuple[Any, Any]:
    """`calendar_flags` for a numpy int64 array: (weekend, night) as float64 arrays."""
    import numpy as np

    t = np.asarray(tx_us, dtype=np.int64)
    day, in_day = np.divmod(t, US_PER_DAY)
    weekend = ((day + 3) % 7 >= 5).astype(np.float64)
    night = (in_day // 3_600_000_000 <= night_end_hour).astype(np.float64)
    return weekend, night
