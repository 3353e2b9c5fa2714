"""The in-process feature state: per-key sorted lists under one lock, snapshots as Parquet.

Per customer, parallel lists of times, ids and amounts sorted by (time, id); per terminal, the
sorted times of its events and of its labelled frauds. A transaction's windows are slices found by
`bisect`; one update and read takes a few microseconds. Keys sit in an `OrderedDict` in the order
they were last touched, so the idle ones are at the front. Rules: `fraud_core.cards.state`.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
from bisect import bisect_left, bisect_right, insort
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Final, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fraud_core.cards.definition import DEFAULT, US_PER_DAY, FeatureDefinition
from fraud_core.cards.state import (
    EVICT_PER_CALL,
    CardTransaction,
    HistoryRows,
    Scored,
    TooLate,
    WindowCodec,
    Windows,
    answers_until_late,
    cutoff_us,
    features_of,
    history_rows,
    key_groups,
    summarise,
    too_late,
    window_sums,
)

T = TypeVar("T")
#: The key in a snapshot's Parquet metadata that holds the state's own fields.
SNAPSHOT_KEY = b"fraud_feature_state"


class _Customer:
    __slots__ = ("amounts", "ids", "name", "times")

    def __init__(self, name: str) -> None:
        self.name = name
        self.times: list[int] = []
        self.ids: list[str] = []
        self.amounts: list[float] = []

    def position(self, t: int, tid: str) -> int:
        lo = bisect_left(self.times, t)
        return bisect_left(self.ids, tid, lo, bisect_right(self.times, t, lo))

    def insert(self, t: int, tid: str, amount: float) -> int:
        times = self.times
        if not times or t > times[-1]:  # the usual case: the newest event of the key
            times.append(t)
            self.ids.append(tid)
            self.amounts.append(amount)
            return len(times) - 1
        p = self.position(t, tid)
        times.insert(p, t)
        self.ids.insert(p, tid)
        self.amounts.insert(p, amount)
        return p

    def bytes(self) -> int:
        return sum(map(sys.getsizeof, (self.name, self, self.times, self.ids, self.amounts)))

    def extend(self, times: list[int], ids: list[str], amounts: list[float]) -> None:
        if not self.times or (times[0], ids[0]) > (self.times[-1], self.ids[-1]):
            self.times += times
            self.ids += ids
            self.amounts += amounts
            return
        merged = sorted(
            zip(self.times + times, self.ids + ids, self.amounts + amounts, strict=True)
        )
        self.times, self.ids, self.amounts = (list(column) for column in zip(*merged, strict=True))


class _Terminal:
    __slots__ = ("frauds", "name", "times")

    def __init__(self, name: str) -> None:
        self.name = name
        self.times: list[int] = []
        self.frauds: list[int] = []  # the times of its events labelled fraud

    def bytes(self) -> int:
        return sum(map(sys.getsizeof, (self.name, self, self.times, self.frauds)))


# An event: (tx_us, customer, terminal, amount, label, first). A tuple of atomic values, so the
# garbage collector stops tracking it: hundreds of thousands of events cost no collection time.
# label: -1 not known yet (counts as 0), 0 or 1; first: the WindowCodec bytes of its first answer
# (None until it is scored).
_Event = tuple[int, str, str, float, int, bytes | None]
_T: Final = 0
_CUSTOMER: Final = 1
_TERMINAL: Final = 2
_AMOUNT: Final = 3
_LABEL: Final = 4
_FIRST: Final = 5


@contextmanager
def _collection_paused() -> Iterator[None]:
    """No garbage collection while a bulk load allocates (it would rescan the growing heap)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
            # One young-generation pass now, in the load, rather than in the next request: it
            # also stops tracking the new event tuples.
            gc.collect(0)


class InProcessState:
    """The embedded default: the state of one API process, thread-safe."""

    def __init__(self, definition: FeatureDefinition = DEFAULT) -> None:
        self.definition = definition
        self._codec = WindowCodec(definition)
        self._lock = threading.Lock()
        self._events: dict[str, _Event] = {}
        self._customers: OrderedDict[str, _Customer] = OrderedDict()
        self._terminals: OrderedDict[str, _Terminal] = OrderedDict()
        self._newest: int | None = None
        self._labelled = 0
        self._answered = 0  # events holding their first answer
        self._markers: set[str] = set()
        self._cw = [w * US_PER_DAY for w in definition.customer_windows_days]
        self._cw_max = max(self._cw)
        self._tw = [w * US_PER_DAY for w in definition.terminal_windows_days]
        self._delay = definition.delay_days * US_PER_DAY
        self._night = definition.night_end_hour
        self._no_frauds = [0] * len(self._tw)

    def score(self, tx: CardTransaction) -> Scored:
        with self._lock:
            return self._score(tx)

    def score_many(self, txs: Sequence[CardTransaction]) -> list[Scored]:
        with self._lock:
            return answers_until_late(self._score(tx) for tx in txs)

    def _score(self, tx: CardTransaction) -> Scored:
        tid, t, newest = tx.transaction_id, tx.tx_us, self._newest
        event = self._events.get(tid)
        if event is not None and newest is not None:
            cutoff = cutoff_us(newest, self.definition)
            if event[_T] > cutoff:
                first = event[_FIRST]
                if first is None:  # loaded as history: its windows at its own place
                    first = self._codec.pack(self._windows_of(tid, event))
                    self._events[tid] = (*event[:_FIRST], first)
                    self._answered += 1
                return Scored(self._codec.features(first), new=False)
            self._trim_customer(self._customers[event[_CUSTOMER]], cutoff)  # gone: score anew
        if newest is not None and too_late(t, newest, self.definition):
            raise TooLate(tx, newest, self.definition)
        customer = self._customers.get(tx.customer_id)
        if customer is None:
            name = sys.intern(tx.customer_id)
            customer = self._customers[name] = _Customer(name)
        else:
            self._customers.move_to_end(customer.name)
        terminal = self._terminals.get(tx.terminal_id)
        if terminal is None:
            name = sys.intern(tx.terminal_id)
            terminal = self._terminals[name] = _Terminal(name)
        else:
            self._terminals.move_to_end(terminal.name)
        amount = float(tx.amount)
        p = customer.insert(t, tid, amount)
        insort(terminal.times, t)
        windows = self._windows_at(customer, terminal, t, p, amount)
        self._events[tid] = (t, customer.name, terminal.name, amount, -1, self._codec.pack(windows))
        self._answered += 1
        if newest is None or t > newest:
            self._newest = newest = t
        self._expire(customer, terminal, cutoff_us(newest, self.definition))
        return Scored(features_of(windows, self._night), new=True)

    def _windows_at(self, c: _Customer, m: _Terminal, t: int, p: int, amount: float) -> Windows:
        times = c.times
        start = bisect_right(times, t - self._cw_max, 0, p)
        customer_counts = [
            p + 1 - (start if w == self._cw_max else bisect_right(times, t - w, start, p))
            for w in self._cw
        ]
        hi = t - self._delay
        all_hi = bisect_right(m.times, hi)
        counts = [all_hi - bisect_right(m.times, hi - w, 0, all_hi) for w in self._tw]
        if m.frauds:
            fraud_hi = bisect_right(m.frauds, hi)
            frauds = [fraud_hi - bisect_right(m.frauds, hi - w, 0, fraud_hi) for w in self._tw]
        else:  # the usual case: frauds are rare
            frauds = self._no_frauds
        sums = window_sums(c.amounts, start, p + 1, customer_counts)
        return summarise(t, amount, customer_counts, sums, counts, frauds)

    def _windows_of(self, tid: str, event: _Event) -> Windows:
        customer = self._customers[event[_CUSTOMER]]
        p = customer.position(event[_T], tid)
        terminal = self._terminals[event[_TERMINAL]]
        return self._windows_at(customer, terminal, event[_T], p, event[_AMOUNT])

    def _expire(self, customer: _Customer, terminal: _Terminal, cutoff: int) -> None:
        if customer.times[0] <= cutoff:
            self._trim_customer(customer, cutoff)
        if terminal.times[0] <= cutoff:
            self._trim_terminal(terminal, cutoff)
        for _ in range(EVICT_PER_CALL):
            oldest = next(iter(self._customers.values()))
            if oldest.times[-1] > cutoff:
                break
            self._trim_customer(oldest, cutoff)
        for _ in range(EVICT_PER_CALL):
            idle = next(iter(self._terminals.values()))
            if idle.times[-1] > cutoff:
                break
            self._trim_terminal(idle, cutoff)

    def _trim_customer(self, customer: _Customer, cutoff: int) -> None:
        n = bisect_right(customer.times, cutoff)
        for tid in customer.ids[:n]:
            event = self._events.pop(tid)
            self._labelled -= event[_LABEL] >= 0
            self._answered -= event[_FIRST] is not None
        del customer.times[:n], customer.ids[:n], customer.amounts[:n]
        if not customer.times:
            del self._customers[customer.name]

    def _trim_terminal(self, terminal: _Terminal, cutoff: int) -> None:
        del terminal.times[: bisect_right(terminal.times, cutoff)]
        del terminal.frauds[: bisect_right(terminal.frauds, cutoff)]
        if not terminal.times:
            del self._terminals[terminal.name]

    def _sweep(self) -> None:
        """Trim and evict everything gone (after a bulk load): O(keys), not per request."""
        if self._newest is None:
            return
        cutoff = cutoff_us(self._newest, self.definition)
        for customer in [c for c in self._customers.values() if c.times[0] <= cutoff]:
            self._trim_customer(customer, cutoff)
        for terminal in [m for m in self._terminals.values() if m.times[0] <= cutoff]:
            self._trim_terminal(terminal, cutoff)

    def label(self, transaction_id: str, is_fraud: bool) -> bool:
        with self._lock:
            event = self._events.get(transaction_id)
            newest = self._newest
            if event is None or newest is None or event[_T] <= cutoff_us(newest, self.definition):
                return False
            new, old, t = (1 if is_fraud else 0), event[_LABEL], event[_T]
            if old < 0:
                self._labelled += 1
            frauds = self._terminals[event[_TERMINAL]].frauds
            if new == 1 and old != 1:
                insort(frauds, t)
            elif new == 0 and old == 1:
                del frauds[bisect_left(frauds, t)]
            self._events[transaction_id] = (*event[:_LABEL], new, event[_FIRST])
            return True

    def load_history(self, frame: pd.DataFrame, marker: str | None = None) -> int:
        rows = history_rows(frame)
        with self._lock:
            if marker is not None and marker in self._markers:
                return 0
            added = self._add(rows, None)
            if marker is not None:
                self._markers.add(marker)
            return added

    def _add(self, rows: HistoryRows, firsts: list[bytes | None] | None) -> int:
        """Add rows not yet there, in bulk: per-key slices, not one insert per row."""
        if not len(rows.tx_us):
            return 0
        newest = max(int(rows.tx_us.max()), self._newest if self._newest is not None else -(2**62))
        events = self._events
        fresh = np.fromiter((i not in events for i in rows.ids), bool, len(rows.ids))
        keep = np.flatnonzero(fresh & (rows.tx_us > cutoff_us(newest, self.definition)))
        at = keep.tolist()
        times = rows.tx_us[keep]
        ts, amounts = times.tolist(), rows.amounts[keep].tolist()
        labels = rows.labels[keep].tolist()
        ids = [rows.ids[i] for i in at]
        customers = [sys.intern(rows.customers[i]) for i in at]
        terminals = [sys.intern(rows.terminals[i]) for i in at]
        first = [None] * len(at) if firsts is None else [firsts[i] for i in at]
        with _collection_paused():
            # The same int and float objects in the records and in every key's lists.
            events.update(
                zip(
                    ids,
                    zip(ts, customers, terminals, amounts, labels, first, strict=True),
                    strict=True,
                )
            )
            order, groups = key_groups(terminals, times)
            by_t = [ts[i] for i in order]
            frauds = [ts[i] if labels[i] == 1 else None for i in order]
            for start, stop in groups:
                name = terminals[order[start]]
                terminal = self._terminals.get(name) or _Terminal(name)
                self._terminals[name] = terminal
                self._terminals.move_to_end(name)
                terminal.times += by_t[start:stop]
                terminal.frauds += [t for t in frauds[start:stop] if t is not None]
                terminal.times.sort()  # two sorted runs: timsort merges them in linear time
                terminal.frauds.sort()
            order, groups = key_groups(customers, times)
            by_t, by_id = [ts[i] for i in order], [ids[i] for i in order]
            by_amount = [amounts[i] for i in order]
            for start, stop in groups:
                name = customers[order[start]]
                customer = self._customers.get(name) or _Customer(name)
                self._customers[name] = customer
                self._customers.move_to_end(name)
                customer.extend(by_t[start:stop], by_id[start:stop], by_amount[start:stop])
        self._labelled += sum(1 for label in labels if label >= 0)
        self._answered += sum(1 for f in first if f is not None)
        self._newest = newest
        self._sweep()
        return len(at)

    def newest_us(self) -> int | None:
        return self._newest

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "customers": len(self._customers),
                "terminals": len(self._terminals),
                "events": len(self._events),
                "labels": self._labelled,
                "memory_bytes": self._memory_bytes(),
            }

    def _memory_bytes(self, sample: int = 256) -> int:
        """An estimate by `sys.getsizeof` that stays cheap (it runs under the lock): the three
        maps exactly, events and keys as a sample's mean size times their number, each shared
        object (an id, a time) counted once, the first answers by their count."""
        size = sum(map(sys.getsizeof, (self._events, self._customers, self._terminals)))
        events = list(islice(self._events.items(), sample))
        if events:
            per_event = sum(
                sys.getsizeof(tid)
                + sys.getsizeof(e)
                + sys.getsizeof(e[_T])
                + sys.getsizeof(e[_AMOUNT])
                for tid, e in events
            )
            size += per_event * len(self._events) // len(events)
            size += self._answered * sys.getsizeof(bytes(self._codec.size))
        size += _scaled(self._customers.values(), sample, _Customer.bytes)
        size += _scaled(self._terminals.values(), sample, _Terminal.bytes)
        return size

    def close(self) -> None:
        """Nothing to release: the state lives in this process."""

    def snapshot(self, path: str | Path) -> None:
        """Write the whole state to a Parquet file, atomically (a temporary file renamed)."""
        path = Path(path)
        with self._lock:
            items = sorted(self._events.items(), key=lambda item: (item[1][_T], item[0]))
            columns = list(zip(*(e for _, e in items), strict=True)) or [()] * 6
            table = pa.table(
                {
                    "transaction_id": pa.array([tid for tid, _ in items], pa.string()),
                    "tx_us": pa.array(columns[_T], pa.int64()),
                    "customer_id": pa.array(columns[_CUSTOMER], pa.string()),
                    "terminal_id": pa.array(columns[_TERMINAL], pa.string()),
                    "amount": pa.array(columns[_AMOUNT], pa.float64()),
                    "label": pa.array(columns[_LABEL], pa.int8()),
                    "first": pa.array(columns[_FIRST], pa.binary()),
                }
            )
            meta = {
                "format": 1,
                "definition": self.definition.as_dict(),
                "newest_us": self._newest,
                "markers": sorted(self._markers),
            }
        table = table.replace_schema_metadata({SNAPSHOT_KEY: json.dumps(meta).encode()})
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def restore(cls, path: str | Path, definition: FeatureDefinition) -> InProcessState:
        """The state `snapshot` wrote; a snapshot of another feature definition is refused."""
        table = pq.read_table(path)
        raw = (table.schema.metadata or {}).get(SNAPSHOT_KEY)
        if raw is None:
            raise ValueError(
                f"{path} is not a feature-state snapshot (no {SNAPSHOT_KEY!r} metadata)"
            )
        meta = json.loads(raw)
        saved = FeatureDefinition.from_dict(meta["definition"])
        if saved != definition:
            raise ValueError(
                f"{path} holds the state of another feature definition ({saved.as_dict()}), "
                f"not {definition.as_dict()}: load the history again instead"
            )
        state = cls(definition)
        firsts = table.column("first").to_pylist()
        frame = table.drop_columns(["first"]).to_pandas()
        rows = history_rows(frame.rename(columns={"label": "_label"}), label_column="_label")
        with state._lock:
            state._newest = meta["newest_us"]
            state._markers = set(meta["markers"])
            state._add(rows, [firsts[i] for i in rows.positions])
        return state


def _scaled(items: Collection[T], sample: int, size_of: Callable[[T], int]) -> int:
    """The size of `items` estimated from its first `sample` ones."""
    some = list(islice(items, sample))
    return sum(map(size_of, some)) * len(items) // len(some) if some else 0
