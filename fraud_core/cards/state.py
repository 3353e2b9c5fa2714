"""The online feature state: a card transaction's behavioural features from the events before it.

The API holds a `FeatureState`. `score(tx)` computes tx's features (`fraud_core.cards.definition`)
from the events already in the state and then adds tx, atomically. Two backends follow the same
rules with the same functions below, so they agree to the bit, and both equal the offline path
(`fraud_core.cards.features`) on a replay (tested):

- `InProcessState` (`fraud_core.cards.memory_state`): per-key sorted lists and one lock.
- `RedisState` (`fraud_core.cards.redis_state`): sorted sets and one Lua script per call, shared
  by API workers and replicas.

The rules:

- Ties at tx's time are ordered by transaction_id (as strings): an event at the same time with a
  larger id is not in tx's customer windows, even if it arrived first.
- A re-sent transaction_id returns its first features and is counted once (`new=False`).
- A transaction more than `max_lateness` behind the newest one seen raises `TooLate`; nothing is
  added.
- An event at or before `cutoff_us(newest)` can never enter a window again: it is gone (a re-send
  of it, a label for it are refused as for an unknown id), its storage is freed when its key is
  next touched, and a key whose newest event is gone is evicted, a few keys per call.
- Labels: `label(id, is_fraud)` sets or overwrites an event's label; an unknown label counts 0.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import accumulate, islice
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np
import pandas as pd

from fraud_core.cards.definition import (
    AMOUNT,
    CUSTOMER_ID,
    HISTORY_COLUMNS,
    LABEL,
    TERMINAL_ID,
    TRANSACTION_ID,
    TX_US,
    FeatureDefinition,
    calendar_flags,
)

if TYPE_CHECKING:
    from fraud_core.cards.memory_state import InProcessState as InProcessState

#: Keys evicted at most per call and kind (customers, terminals): bounded work per request. Each
#: call adds at most one key of each kind, so eviction keeps up.
EVICT_PER_CALL = 8


@dataclass(frozen=True, slots=True)
class CardTransaction:
    """One transaction to score: the raw request fields, its time as µs since the epoch (UTC)."""

    transaction_id: str
    tx_us: int
    customer_id: str
    terminal_id: str
    amount: float


@dataclass(frozen=True, slots=True)
class Scored:
    """A transaction's features, in `definition.feature_names` order."""

    features: tuple[float, ...]
    #: False when this transaction_id was seen before: the features are its first ones.
    new: bool


class TooLate(ValueError):
    """A transaction more than `max_lateness` behind the newest one seen: it cannot be scored."""

    def __init__(self, tx: CardTransaction, newest_us: int, definition: FeatureDefinition) -> None:
        self.transaction_id = tx.transaction_id
        self.tx_us = tx.tx_us
        self.newest_us = newest_us
        self.limit_us = definition.max_lateness_us
        #: Set by `score_many`: the answers of the batch's transactions before this one, which
        #: were added (a batch stops at its first late transaction).
        self.scored: list[Scored] = []
        super().__init__(
            f"transaction {tx.transaction_id!r} at {iso(tx.tx_us)} is more than "
            f"{definition.max_lateness_days} days behind the newest transaction seen "
            f"({iso(newest_us)}): too late to score (the limit is max_lateness_days="
            f"{definition.max_lateness_days})"
        )


class FeatureState(Protocol):
    """Per-customer and per-terminal state that scores transactions one at a time."""

    definition: FeatureDefinition

    def score(self, tx: CardTransaction) -> Scored:
        """tx's features from the events before it, then tx added: atomic."""
        ...

    def score_many(self, txs: Sequence[CardTransaction]) -> list[Scored]:
        """`score` of each in order, each seeing the ones before it; stops at a `TooLate`,
        whose `scored` holds the answers of those before it."""
        ...

    def label(self, transaction_id: str, is_fraud: bool) -> bool:
        """Set (or overwrite) an event's label; False when the id is not in the state."""
        ...

    def load_history(self, frame: pd.DataFrame, marker: str | None = None) -> int:
        """Add a canonical labelled frame's rows not yet there; returns how many were added.

        With a `marker`, a second call with the same marker adds nothing (replicas starting at
        once load a model's history once).
        """
        ...

    def newest_us(self) -> int | None: ...

    def stats(self) -> dict[str, int]:
        """customers, terminals, events, labels and memory_bytes."""
        ...

    def close(self) -> None: ...


def answers_until_late(answers: Iterator[Scored]) -> list[Scored]:
    """Collect a batch's answers; at a `TooLate`, attach those before it and raise it."""
    done: list[Scored] = []
    try:
        for answer in answers:
            done.append(answer)
    except TooLate as exc:
        exc.scored = done
        raise
    return done


def iso(tx_us: int) -> str:
    """A µs time as ISO 8601 (UTC), for messages."""
    return (datetime(1970, 1, 1) + timedelta(microseconds=tx_us)).isoformat() + "Z"


def too_late(tx_us: int, newest_us: int | None, definition: FeatureDefinition) -> bool:
    """Whether a transaction at `tx_us` is more than max_lateness behind the newest one seen: the
    rule `TooLate` states (the Redis script applies the same comparison)."""
    return newest_us is not None and tx_us < newest_us - definition.max_lateness_us


def cutoff_us(newest_us: int, definition: FeatureDefinition) -> int:
    """Events at or before this time are gone: no transaction that may still be scored (none is
    more than max_lateness behind `newest_us`) looks back past it."""
    return newest_us - definition.retention_us


class Windows(NamedTuple):
    """What a transaction's windows held when it was scored: its features follow from these."""

    tx_us: int
    amount: float
    customer_counts: tuple[int, ...]  # definition.customer_windows_days order
    customer_means: tuple[float, ...]
    terminal_counts: tuple[int, ...]  # definition.terminal_windows_days order
    terminal_frauds: tuple[int, ...]


def window_sums(
    amounts: list[float], start: int, stop: int, customer_counts: Sequence[int]
) -> list[float]:
    """The sum of each customer window. `amounts[start:stop]` are the longest window's, in
    (time, id) order, ending with tx itself; a window of `count` holds the last `count`.

    Each sum adds the amounts from the newest (tx itself) back to the oldest, one at a time: the
    Redis script does the same additions in the same order (Lua numbers are doubles), so both
    backends get the same bits. One pass serves every window.
    """
    n = len(amounts)
    totals = list(accumulate(islice(reversed(amounts), n - stop, n - start)))
    return [totals[c - 1] for c in customer_counts]


def summarise(
    tx_us: int,
    amount: float,
    customer_counts: Sequence[int],
    customer_sums: Sequence[float],
    terminal_counts: Sequence[int],
    terminal_frauds: Sequence[int],
) -> Windows:
    """`Windows` from the windows' counts and sums: what both backends compute the same way."""
    means = tuple(
        [total / count for total, count in zip(customer_sums, customer_counts, strict=True)]
    )
    return Windows(
        tx_us, amount, tuple(customer_counts), means, tuple(terminal_counts), tuple(terminal_frauds)
    )


def features_of(windows: Windows, night_end_hour: int) -> tuple[float, ...]:
    """The features, in `FeatureDefinition.feature_names` order."""
    weekend, night = calendar_flags(windows.tx_us, night_end_hour)
    values = [windows.amount, weekend, night]
    for count, mean in zip(windows.customer_counts, windows.customer_means, strict=True):
        values += (float(count), mean)
    for count, frauds in zip(windows.terminal_counts, windows.terminal_frauds, strict=True):
        values += (float(count), frauds / count if count else 0.0)
    return tuple(values)


class WindowCodec:
    """`Windows` as compact bytes: what the in-process state keeps per event for a re-send."""

    def __init__(self, definition: FeatureDefinition) -> None:
        nc, nt = len(definition.customer_windows_days), len(definition.terminal_windows_days)
        self._nc, self._nt = nc, nt
        self._struct = struct.Struct(f"<qd{nc}I{nc}d{2 * nt}I")
        self._night = definition.night_end_hour
        self.size = self._struct.size

    def pack(self, w: Windows) -> bytes:
        return self._struct.pack(
            w.tx_us,
            w.amount,
            *w.customer_counts,
            *w.customer_means,
            *w.terminal_counts,
            *w.terminal_frauds,
        )

    def unpack(self, data: bytes) -> Windows:
        values = self._struct.unpack(data)
        nc, nt = self._nc, self._nt
        return Windows(
            values[0],
            values[1],
            values[2 : 2 + nc],
            values[2 + nc : 2 + 2 * nc],
            values[2 + 2 * nc : 2 + 2 * nc + nt],
            values[2 + 2 * nc + nt :],
        )

    def features(self, data: bytes) -> tuple[float, ...]:
        return features_of(self.unpack(data), self._night)


class HistoryRows(NamedTuple):
    """`load_history`'s input as arrays, in (time, id) order, without duplicate ids."""

    ids: list[str]
    tx_us: np.ndarray  # int64
    customers: list[str]
    terminals: list[str]
    amounts: np.ndarray  # float64
    labels: np.ndarray  # int8: 0/1, or -1 where unknown (a snapshot's unlabelled events)
    positions: np.ndarray  # each row's position in the frame given


def history_rows(frame: pd.DataFrame, *, label_column: str = LABEL) -> HistoryRows:
    """The rows of a canonical labelled frame to add, checked and in (time, id) order."""
    columns = (*HISTORY_COLUMNS[:-1], label_column)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"the history to load lacks column(s) {missing}: it needs {list(HISTORY_COLUMNS)}"
        )
    frame = frame.reset_index(drop=True).drop_duplicates(TRANSACTION_ID)
    tx_us = frame[TX_US].to_numpy(np.int64)
    ids = frame[TRANSACTION_ID].astype(str)
    # The canonical frame is sorted; re-sort only what is not (string ties need Python order).
    if len(tx_us) > 1 and not (
        bool(np.all(np.diff(tx_us) >= 0)) and _ties_sorted(tx_us, ids.to_numpy(object))
    ):
        frame = frame.assign(**{TRANSACTION_ID: ids}).sort_values([TX_US, TRANSACTION_ID])
        tx_us, ids = frame[TX_US].to_numpy(np.int64), frame[TRANSACTION_ID]
    labels = frame[label_column].to_numpy(np.int8)
    allowed = (0, 1) if label_column == LABEL else (-1, 0, 1)
    if len(labels) and not np.isin(labels, allowed).all():
        raise ValueError(f"the history's {label_column!r} holds values other than {allowed}")
    return HistoryRows(
        ids.tolist(),
        tx_us,
        frame[CUSTOMER_ID].astype(str).tolist(),
        frame[TERMINAL_ID].astype(str).tolist(),
        frame[AMOUNT].to_numpy(np.float64),
        labels,
        frame.index.to_numpy(),
    )


def key_groups(keys: list[str], tx_us: np.ndarray) -> tuple[list[int], list[tuple[int, int]]]:
    """Rows grouped by key: a permutation putting each key's rows together (in the rows' order)
    and each group's [start, stop) in it, the groups by their newest time (rows in time order),
    so keys are touched in time order and the idle ones come first."""
    if not len(keys):
        return [], []
    codes, _ = pd.factorize(np.asarray(keys, dtype=object))
    order = np.argsort(codes, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
    stops = np.r_[starts[1:], len(order)]
    by_newest = np.argsort(tx_us[order[stops - 1]], kind="stable")
    return order.tolist(), list(
        zip(starts[by_newest].tolist(), stops[by_newest].tolist(), strict=True)
    )


def _ties_sorted(tx_us: np.ndarray, ids: np.ndarray) -> bool:
    tied = np.flatnonzero(tx_us[1:] == tx_us[:-1])
    return all(ids[i] < ids[i + 1] for i in tied)


def open_state(
    url: str | None, definition: FeatureDefinition, *, prefix: str = "fraud"
) -> FeatureState:
    """The state a URL names: None, "" or "memory" in process; redis:// or rediss:// in Redis."""
    if not url or url == "memory":
        from fraud_core.cards.memory_state import InProcessState

        return InProcessState(definition)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from fraud_core.cards.redis_state import RedisState

        return RedisState.from_url(url, definition, prefix=prefix)
    raise ValueError(
        f"unknown feature state {url!r}: use 'memory' (or leave it unset) for the in-process "
        "state, or a redis://host:port/db URL"
    )


def __getattr__(name: str) -> object:
    # `from fraud_core.cards.state import InProcessState` works; a lazy import avoids a cycle
    # (the backend imports this module's rules).
    if name == "InProcessState":
        from fraud_core.cards.memory_state import InProcessState

        return InProcessState
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
