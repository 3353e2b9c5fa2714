"""The Redis feature state: one state shared by API workers and replicas, one Lua call a score.

A score is one EVALSHA: the script checks a re-send and the lateness, adds the transaction, reads
its windows and expires what is gone, atomically, so two concurrent requests for one card both
count. Redis would truncate a Lua float reply to an integer, so the script answers in text: the
windows' counts, and their sums added in the order `fraud_core.cards.state.window_sums` adds
them (printed with 17 digits, read back exactly); Python then computes the features with the
in-process backend's own functions (`summarise`, `features_of`): both backends agree to the bit.

Keys, all under `{prefix}:` (the braces are a hash tag: one cluster slot for every key):

- `c:<customer>`: sorted set, score tx_us, member `<transaction_id>\\0<amount repr>`. Members of one
  score sort by their bytes, so by id, as the definition orders ties; a rank is the position.
- `t:<terminal>`: sorted set of its transaction ids by tx_us; `f:<terminal>`: those labelled fraud.
- `events`: hash id -> `<tx_us>\\0<customer>\\0<terminal>\\0<amount repr>\\0<label>`, the label
  "0", "1" or empty while not known; `labelled`: how many events have one.
- `first`: hash id -> its first answer, the windows as text (a re-send returns it).
- `newest`: the newest tx_us seen; `idle:c`, `idle:t`: key names by their newest event (eviction);
  `definition`: the feature definition the state follows; `history:<marker>`: a loaded history.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import redis

from fraud_core.cards.definition import DEFAULT, FeatureDefinition
from fraud_core.cards.redis_lua import BULK, EVICT, LABEL, NEWEST_MAX, SCORE, constants
from fraud_core.cards.state import (
    CardTransaction,
    HistoryRows,
    Scored,
    TooLate,
    Windows,
    answers_until_late,
    cutoff_us,
    features_of,
    history_rows,
    key_groups,
    summarise,
)

#: The score script's answers: the first features, a re-send's, too late, skipped in a batch.
NEW, SEEN, LATE, SKIPPED = 1, 0, 2, 3
#: How long a `load_history` marker says "loading" before another replica may load instead.
LOADING_TTL_S = 600
#: Fields or members per command when loading a history.
CHUNK = 10_000


class RedisState:
    """The feature state in Redis under one key prefix: a restart or another replica sees it."""

    def __init__(
        self, client: redis.Redis, definition: FeatureDefinition = DEFAULT, *, prefix: str = "fraud"
    ) -> None:
        if not prefix or any(ch in prefix for ch in "{}*?[]\\") or not prefix.isprintable():
            raise ValueError(f"bad Redis key prefix {prefix!r}: printable, without {{}}*?[]\\")
        if client.get_encoder().decode_responses:
            raise ValueError("RedisState needs a client with decode_responses=False")
        self.definition = definition
        self._r = client
        self._owns_client = False
        self._p = p = "{" + prefix + "}"
        self._base = [
            f"{p}:{k}" for k in ("newest", "events", "labelled", "first", "idle:c", "idle:t")
        ]
        head = constants(definition)
        self._score = client.register_script(head + SCORE)
        self._label = client.register_script(head + LABEL)
        self._evict = client.register_script(head + EVICT)
        self._newest_max = client.register_script(head + NEWEST_MAX)
        self._bulk = client.register_script(head + BULK)
        self._nc = len(definition.customer_windows_days)
        self._nt = len(definition.terminal_windows_days)
        self._check_definition()

    @classmethod
    def from_url(
        cls, url: str, definition: FeatureDefinition = DEFAULT, *, prefix: str = "fraud"
    ) -> RedisState:
        state = cls(redis.Redis.from_url(url, decode_responses=False), definition, prefix=prefix)
        state._owns_client = True
        return state

    def _check_definition(self) -> None:
        mine = json.dumps(self.definition.as_dict(), sort_keys=True)
        key = f"{self._p}:definition"
        self._r.set(key, mine, nx=True)
        raw = self._r.get(key)
        theirs = raw.decode() if isinstance(raw, bytes) else raw
        if theirs is not None and theirs != mine:
            raise ValueError(
                f"the Redis state under {self._p!r} follows another feature definition "
                f"({theirs}), not {mine}: use another prefix for this one"
            )

    def score(self, tx: CardTransaction) -> Scored:
        return self._answer(tx, self._score(keys=self._keys(tx), args=self._args(tx, "")))

    def score_many(self, txs: Sequence[CardTransaction]) -> list[Scored]:
        if len(txs) <= 1:
            return [self.score(tx) for tx in txs]
        # One round trip for the batch; the token makes every call after a TooLate skip, so the
        # batch behaves as score() in a loop that stops there.
        token = uuid.uuid4().hex
        pipe = self._r.pipeline(transaction=False)
        for tx in txs:
            self._score(keys=self._keys(tx), args=self._args(tx, token), client=pipe)
        replies = pipe.execute()
        return answers_until_late(
            self._answer(tx, reply) for tx, reply in zip(txs, replies, strict=True)
        )

    def _keys(self, tx: CardTransaction) -> list[str]:
        p = self._p
        return [
            *self._base,
            f"{p}:c:{tx.customer_id}",
            f"{p}:t:{tx.terminal_id}",
            f"{p}:f:{tx.terminal_id}",
        ]

    def _args(self, tx: CardTransaction, token: str) -> list[str]:
        return [
            self._p,
            tx.transaction_id,
            str(int(tx.tx_us)),
            tx.customer_id,
            tx.terminal_id,
            repr(float(tx.amount)),
            token,
        ]

    def _answer(self, tx: CardTransaction, reply: list[Any]) -> Scored:
        status, payload = int(reply[0]), reply[1]
        if status == LATE:
            raise TooLate(tx, int(payload), self.definition)
        if status == SKIPPED:
            raise RuntimeError(f"transaction {tx.transaction_id!r} was skipped after a TooLate")
        windows = self._parse(payload)
        return Scored(features_of(windows, self.definition.night_end_hour), new=status == NEW)

    def _parse(self, text: bytes) -> Windows:
        """The script's windows: `tx_us amount counts… sums… (count frauds)…`."""
        parts = text.split(b" ")
        nc = self._nc
        terminal = [int(x) for x in parts[2 + 2 * nc :]]
        return summarise(
            int(parts[0]),
            float(parts[1]),
            [int(x) for x in parts[2 : 2 + nc]],
            [float(x) for x in parts[2 + nc : 2 + 2 * nc]],
            terminal[0::2],
            terminal[1::2],
        )

    def label(self, transaction_id: str, is_fraud: bool) -> bool:
        args = [self._p, transaction_id, "1" if is_fraud else "0"]
        return bool(self._label(keys=self._base, args=args))

    def load_history(self, frame: pd.DataFrame, marker: str | None = None) -> int:
        rows = history_rows(frame)
        if marker is None:
            return self._load(rows)
        key = f"{self._p}:history:{marker}"
        # SET NX: one replica loads; the others wait for "done" (or for the marker to expire if
        # that replica died, and then load it themselves).
        while not self._r.set(key, b"loading", nx=True, ex=LOADING_TTL_S):
            if self._r.get(key) == b"done":
                return 0
            time.sleep(0.05)
        try:
            added = self._load(rows)
        except BaseException:
            self._r.delete(key)
            raise
        self._r.set(key, b"done")
        return added

    def _load(self, rows: HistoryRows) -> int:
        """Add rows not yet there, pipelined and grouped by key: a few commands per key."""
        if not len(rows.tx_us):
            return 0
        before = self.newest_us()
        newest = max(int(rows.tx_us.max()), before if before is not None else -(2**62))
        keep = rows.tx_us > cutoff_us(newest, self.definition)
        if before is not None:  # ids already there are skipped (an empty state has none)
            pipe = self._r.pipeline(transaction=False)
            for start in range(0, len(rows.ids), CHUNK):
                pipe.hmget(self._base[1], rows.ids[start : start + CHUNK])
            there = [v is not None for reply in pipe.execute() for v in reply]
            keep &= ~np.asarray(there, dtype=bool)
        at = np.flatnonzero(keep)
        p, idx = self._p, at.tolist()
        times = rows.tx_us[at]
        ts = [str(t) for t in times.tolist()]
        amounts = [repr(a) for a in rows.amounts[at].tolist()]
        labels = rows.labels[at].tolist()
        ids = [rows.ids[i] for i in idx]
        customers = [rows.customers[i] for i in idx]
        terminals = [rows.terminals[i] for i in idx]
        # newest first: a score running meanwhile then never sees events without a newest time
        self._newest_max(keys=self._base, args=[p, str(newest)])
        bulk = _Bulk(self._r.pipeline(transaction=False), self._bulk, self._base, p)
        order, groups = key_groups(customers, times)
        by_t = [ts[i] for i in order]
        members = [f"{ids[i]}\0{amounts[i]}" for i in order]
        newest_of: list[str] = []
        for start, stop in groups:
            bulk.add("Z", f"{p}:c:{customers[order[start]]}", by_t[start:stop], members[start:stop])
            newest_of.append(by_t[stop - 1])  # a group is in time order
        bulk.add("G", self._base[4], newest_of, [customers[order[start]] for start, _ in groups])
        order, groups = key_groups(terminals, times)
        by_t, by_id = [ts[i] for i in order], [ids[i] for i in order]
        fraud = [labels[i] == 1 for i in order]
        newest_of = []
        for start, stop in groups:
            name = terminals[order[start]]
            bulk.add("Z", f"{p}:t:{name}", by_t[start:stop], by_id[start:stop])
            frauds = [k for k in range(start, stop) if fraud[k]]
            if frauds:
                bulk.add(
                    "Z", f"{p}:f:{name}", [by_t[k] for k in frauds], [by_id[k] for k in frauds]
                )
            newest_of.append(by_t[stop - 1])
        bulk.add("G", self._base[5], newest_of, [terminals[order[start]] for start, _ in groups])
        records = [
            f"{t}\0{c}\0{m}\0{a}\0{'1' if v == 1 else '0'}"
            for t, c, m, a, v in zip(ts, customers, terminals, amounts, labels, strict=True)
        ]
        bulk.add("H", self._base[1], ids, records)
        bulk.execute()
        self._r.incrby(self._base[2], len(ids))
        while self._evict(keys=self._base, args=[p, 1000]) > 0:  # what the new newest expires
            pass
        return len(idx)

    def newest_us(self) -> int | None:
        value = self._r.get(self._base[0])
        return None if value is None else int(value)

    def stats(self) -> dict[str, int]:
        pipe = self._r.pipeline(transaction=False)
        pipe.zcard(self._base[4])
        pipe.zcard(self._base[5])
        pipe.hlen(self._base[1])
        pipe.get(self._base[2])
        customers, terminals, events, labels = pipe.execute()
        keys = list(self._r.scan_iter(match=f"{self._p}:*", count=1000))
        pipe = self._r.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key, samples=64)  # sampled: exact would walk 640 k fields
        memory = sum(m or 0 for m in pipe.execute())
        return {
            "customers": customers,
            "terminals": terminals,
            "events": events,
            "labels": int(labels or 0),
            "memory_bytes": memory,
        }

    def clear(self) -> int:
        """Delete every key under the prefix (tests; a fresh start); returns how many."""
        removed = 0
        batch: list[bytes] = []
        for key in self._r.scan_iter(match=f"{self._p}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                removed += self._r.unlink(*batch)
                batch = []
        if batch:
            removed += self._r.unlink(*batch)
        return removed

    def close(self) -> None:
        if self._owns_client:
            self._r.close()


class _Bulk:
    """Commands of a history load, packed into `BULK` script calls of about CHUNK pairs each."""

    def __init__(self, pipe: Any, script: Any, keys: list[str], prefix: str) -> None:
        self._pipe, self._script, self._keys = pipe, script, keys
        self._args: list[str] = [prefix]
        self._size = 0

    def add(self, command: str, key: str, first: list[str], second: list[str]) -> None:
        for start in range(0, len(first), CHUNK):
            stop = start + CHUNK
            self._args += (command, key, "\n".join(_pairs(first[start:stop], second[start:stop])))
            self._size += len(first[start:stop])
            if self._size >= CHUNK:
                self._send()

    def _send(self) -> None:
        if len(self._args) > 1:
            self._script(keys=self._keys, args=self._args, client=self._pipe)
        self._args, self._size = self._args[:1], 0

    def execute(self) -> None:
        self._send()
        self._pipe.execute()


def _pairs(first: list[str], second: list[str]) -> list[str]:
    """[a0, b0, a1, b1, …]: the argument layout of ZADD and HSET."""
    out = [""] * (2 * len(first))
    out[0::2], out[1::2] = first, second
    return out
