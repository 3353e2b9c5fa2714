"""The API in a real uvicorn process: hot reload under load, a corrupt bundle refused.

The server runs on a free port with the watcher polling every `INTERVAL_S`; the tests publish
into its model store exactly as the promotion step does.
"""

from __future__ import annotations

import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fraud_core.bundle import CLASSIFIER
from fraud_core.store import ModelStore
from servicectl.health import http_probe, wait_until
from servicectl.process import running
from tests.api.conftest import MakeModel, flip_byte, manifest, publish, transaction
from tests.conftest import free_port

pytestmark = pytest.mark.slow

INTERVAL_S = 0.2
#: How late the watcher may be beyond its interval (loading and verifying a bundle, a busy CPU).
WATCHER_SLACK_S = 0.5
#: Importing the app (numpy, xgboost, scikit-learn, FastAPI) on a busy two-core machine.
START_TIMEOUT_S = 120.0
CLIENT_THREADS = 3
PUBLISHES = 10
PUBLISH_GAP_S = 0.4


@dataclass(frozen=True)
class LiveServer:
    url: str
    store: ModelStore
    log: Path


def _wait_until(condition: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    wait_until(what, condition, timeout, logs=[log], interval_s=0.1)


def _served_version(url: str) -> str | None:
    response = httpx.get(f"{url}/model", timeout=5)
    return response.json()["model_version"] if response.status_code == 200 else None


def _samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _swaps(log: Path) -> list[tuple[str, str, str]]:
    """(from version, to version, source) of each model load the server logged."""
    text = log.read_text(errors="replace")
    pattern = r"loaded model: from version (\S+) to version (\S+) \(source: directory (\S+)\)"
    return re.findall(pattern, text)


def _refusals(url: str) -> float:
    key = ("fraud_api_model_reloads_total", frozenset({("result", "refused")}))
    return _samples(url).get(key, 0.0)


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, make_fraud_model: MakeModel
) -> Iterator[LiveServer]:
    """`python -m uvicorn api.main:app` on a store with one published model; stopped after."""
    root = tmp_path_factory.mktemp("live_api")
    store = ModelStore(root / "models")
    publish(store, make_fraud_model(seed=1), "live-000")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Nothing from the developer's environment reaches the server's settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRAUD_", "MLFLOW_"))}
    env["FRAUD_MODELS_DIR"] = str(store.root)
    env["FRAUD_API_RELOAD_INTERVAL_S"] = str(INTERVAL_S)
    env["FRAUD_PREDICTION_LOG_URL"] = f"sqlite:///{root / 'predictions.db'}"
    log = root / "uvicorn.log"
    command = [sys.executable, "-m", "uvicorn", "api.main:app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    # cwd: the app reads `.env` from its working directory; the project's must not apply.
    with running(command, cwd=root, env=env, log=log) as proc:
        ready = http_probe(f"{url}/ready", timeout_s=2)
        wait_until("uvicorn /ready", ready, START_TIMEOUT_S, logs=[log], process=proc)
        yield LiveServer(url, store, log)


@dataclass(frozen=True)
class Answer:
    started: float
    ended: float
    status: int | None
    version: str | None
    error: str


def _hammer(url: str, stop: threading.Event, out: list[Answer]) -> None:
    """POST /predict over one keep-alive connection until `stop`."""
    record = transaction(V14=-2.0, Amount=12.5)
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                response = client.post("/predict", json=record)
            except httpx.HTTPError as exc:
                out.append(Answer(started, time.monotonic(), None, None, repr(exc)))
                continue
            ended = time.monotonic()
            ok = response.status_code == 200
            version = response.json()["model_version"] if ok else None
            out.append(
                Answer(started, ended, response.status_code, version, "" if ok else response.text)
            )


def test_hot_reload_under_load_drops_nothing_and_serves_only_published_versions(
    live_server: LiveServer, make_fraud_model: MakeModel
) -> None:
    url, store = live_server.url, live_server.store
    first = _served_version(url)
    assert first is not None
    # (version, publish started, publish ended): production from some moment in the first
    # publish until some moment in the next one's.
    timeline: list[tuple[str, float, float]] = [(first, -math.inf, -math.inf)]
    stop = threading.Event()
    answers: list[list[Answer]] = [[] for _ in range(CLIENT_THREADS)]
    threads = [
        threading.Thread(target=_hammer, args=(url, stop, out), daemon=True) for out in answers
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(PUBLISH_GAP_S)
        for i in range(PUBLISHES):
            version = f"hot-{i:02d}"
            model = make_fraud_model(seed=1 + i % 2)
            started = time.monotonic()
            publish(store, model, version)
            timeline.append((version, started, time.monotonic()))
            time.sleep(PUBLISH_GAP_S)
        last = timeline[-1][0]
        _wait_until(lambda: _served_version(url) == last, 30, f"{last} served", live_server.log)
        time.sleep(PUBLISH_GAP_S)  # some answers from the last version too
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)

    everything = [answer for out in answers for answer in out]
    failed = [a for a in everything if a.status != 200]
    assert not failed, f"{len(failed)} of {len(everything)} failed, e.g. {failed[:3]}"
    assert len(everything) >= 10 * CLIENT_THREADS

    index = {version: k for k, (version, _, _) in enumerate(timeline)}
    stale = []
    for answer in everything:
        assert answer.version in index, f"{answer.version} was never published"
        k = index[answer.version]
        became_production = timeline[k][1]
        replaced_by = timeline[k + 1][2] if k + 1 < len(timeline) else math.inf
        # In production at some moment of [request start - watcher delay, request end].
        window_start = answer.started - INTERVAL_S - WATCHER_SLACK_S
        if not (became_production <= answer.ended and replaced_by >= window_start):
            stale.append(answer)
    assert not stale, f"{len(stale)} answers from a version not in production then: {stale[:3]}"

    # Each connection sees versions only move forward, and the reloads happened under load.
    for out in answers:
        seen = [index[a.version] for a in out if a.version is not None]
        assert seen == sorted(seen)
    assert len({a.version for a in everything}) >= 3

    assert _served_version(url) == last
    samples = _samples(url)
    info = {
        dict(labels)["model_version"]: v
        for (n, labels), v in samples.items()
        if n == "fraud_api_model_info"
    }
    assert info == {last: 1.0}

    # uvicorn configures only its own loggers: the API's own lines are printed all the same, one
    # for each load, each from the version before it.
    swaps = _swaps(live_server.log)
    assert swaps[0][:2] == ("none", "live-000")
    assert [old for old, _, _ in swaps[1:]] == [new for _, new, _ in swaps[:-1]]
    assert swaps[-1] == (swaps[-2][1], last, str(store.releases / last))
    assert len(swaps) >= 3


def test_a_corrupt_bundle_in_production_is_refused_and_serving_goes_on(
    live_server: LiveServer, make_fraud_model: MakeModel
) -> None:
    url, store = live_server.url, live_server.store
    good = "good-01"
    publish(store, make_fraud_model(seed=2), good)
    _wait_until(lambda: _served_version(url) == good, 30, f"{good} served", live_server.log)
    refused_before = _refusals(url)

    # A bundle damaged after it passed the store's checks (a bad disk, a hand-made copy):
    # released and switched to exactly as `ModelStore.publish` does, minus the verification.
    staged = store.stage(make_fraud_model(seed=3), manifest("corrupt-01"))
    flip_byte(staged / CLASSIFIER)
    release = store.releases / "corrupt-01"
    os.replace(staged, release)
    link = store.root / ".production.test.tmp"
    link.symlink_to(release.relative_to(store.root), target_is_directory=True)
    os.replace(link, store.production)

    _wait_until(
        lambda: _refusals(url) > refused_before, 30, "the corrupt bundle refused", live_server.log
    )
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(20):
            response = client.post("/predict", json=transaction())
            assert response.status_code == 200, response.text
            assert response.json()["model_version"] == good
        assert client.get("/ready").json() == {"status": "ready", "model_version": good}
    samples = _samples(url)
    assert samples[("fraud_api_model_info", frozenset({("model_version", good)}))] == 1.0
    assert samples[("fraud_api_model_reloads_total", frozenset({("result", "refused")}))] >= 1
    text = live_server.log.read_text(errors="replace")
    refused = (
        f"ERROR fraud_api.serving: refused model version corrupt-01 (source: directory {release})"
    )
    assert f"{refused}, still serving version {good}: " in text
