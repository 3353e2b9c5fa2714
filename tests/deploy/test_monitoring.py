"""The monitoring files: Prometheus' config and alert rules, Grafana's provisioning and dashboard.

With `promtool` on PATH the Prometheus files go through Prometheus' own checks and the rules' unit
tests (alerts_test.yml); without it those tests skip and everything else still runs: the rules
against the Prometheus rules schema (SchemaStore's, vendored), the dashboard against our schema,
and every metric that a rule or a panel queries against what the API really exports on /metrics.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import string
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from fraud_core.prediction_log import make_engine
from fraud_core.prediction_log.reports import save_report
from fraud_core.store import ModelStore
from tests.api.conftest import (
    FRAUD_PATTERN,
    THRESHOLD,
    V1,
    MakeModel,
    make_settings,
    publish,
    transaction,
)

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parent / "schemas"
MONITORING = REPO / "monitoring"
PROMETHEUS_DIR = MONITORING / "prometheus"
PROMETHEUS_YML = PROMETHEUS_DIR / "prometheus.yml"
LOCAL_TEMPLATE = PROMETHEUS_DIR / "prometheus.local.yml.template"
ALERTS_YML = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST_YML = PROMETHEUS_DIR / "alerts_test.yml"
DATASOURCE_YML = MONITORING / "grafana/provisioning/datasources/prometheus.yml"
DASHBOARDS_YML = MONITORING / "grafana/provisioning/dashboards/dashboards.yml"
DASHBOARD_JSON = MONITORING / "grafana/dashboards/fraud-api.json"

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not on PATH (Debian: apt-get install prometheus; or a release tarball "
    "from prometheus.io): Prometheus' own checks skipped, the schema checks still run",
)

#: The job, target and port the API has in docker compose (service `api`, 8080 in its container).
JOB = "fraud-api"
COMPOSE_TARGET = "api:8080"
DASHBOARDS_PATH = "/var/lib/grafana/dashboards"
SEVERITIES = {"warning", "critical"}
#: Alerts whose value is a constant (an `up` of 1), so their description has no `$value` to show.
VALUE_FREE_ALERTS = {"FraudApiNoModelLoaded"}
#: The alerts the unit tests must exercise both ways (firing, and a case that must not fire).
UNIT_TESTED_ALERTS = {
    "FraudApiHighErrorRate",
    "FraudApiPredictLatencyHigh",
    "FraudDriftFail",
    "FraudPredictionLogDropping",
}

#: Labels Prometheus attaches to every scraped series (the API does not export them).
TARGET_LABELS = frozenset({"job", "instance"})
#: Series Prometheus writes itself for every target, with their labels: not on /metrics.
PROMETHEUS_SERIES: dict[str, frozenset[str]] = {"up": frozenset()}
#: The drift gauges the API exports from the newest drift report (api/drift_metrics.py).
DRIFT_METRICS = frozenset(
    {
        "fraud_drift_psi",
        "fraud_drift_ks_statistic",
        "fraud_drift_status",
        "fraud_drift_score_psi",
        "fraud_drift_current_rows",
        "fraud_drift_report_timestamp_seconds",
    }
)


# --- reading the files ----------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


def alerting_rules(rules_file: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for group in rules_file["groups"]:
        for rule in group.get("rules") or []:
            if "alert" in rule:
                yield rule


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside (collapsed) rows included."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels") or [])


def provisioned_uid() -> str:
    (datasource,) = load_yaml(DATASOURCE_YML)["datasources"]
    return str(datasource["uid"])


def schema_errors(instance: Any, schema_file: str) -> list[str]:
    schema = load_json(SCHEMAS / schema_file)
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
        for error in validator.iter_errors(instance)
    ]


# --- PromQL: the metric names and label matchers of an expression ---------------------------------

_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    | (?P<variable>\$\{[^}]*\}|\$\w+)
    | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])*)
    | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}\[\]@])
    """,
    re.VERBOSE,
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


AGGREGATIONS = _words(
    "sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk "
    "limit_ratio"
)
#: Prometheus 2.42 to 3.x.
FUNCTIONS = _words(
    "abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes "
    "clamp clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year "
    "days_in_month deg delta deriv double_exponential_smoothing end exp floor histogram_avg "
    "histogram_count histogram_fraction histogram_quantile histogram_stddev histogram_stdvar "
    "histogram_sum holt_winters hour idelta increase info irate label_join label_replace "
    "last_over_time ln log10 log2 mad_over_time max_over_time min_over_time minute month pi "
    "predict_linear present_over_time quantile_over_time rad rate resets round scalar sgn sin "
    "sinh sort sort_by_label sort_by_label_desc sort_desc sqrt start stddev_over_time "
    "stdvar_over_time sum_over_time tan tanh time timestamp vector year"
)
#: Followed by a parenthesised list of label names, not of expressions.
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}) | GROUPING


class PromQLError(ValueError):
    pass


#: Label matchers of a selector: (label, operator, value).
Matchers = tuple[tuple[str, str, str], ...]


@dataclass(frozen=True)
class Selector:
    """One vector selector: the metric and its label matchers."""

    metric: str
    matchers: Matchers = ()


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise PromQLError(f"cannot read {expr[pos : pos + 20]!r}")
        kind = str(match.lastgroup)
        if kind != "space":
            out.append((kind, match.group()))
        pos = match.end()
    return out


def _closing(tokens: list[tuple[str, str]], start: int, close: str) -> int:
    """The index after the token `close` that ends what opens at `start`."""
    for i in range(start, len(tokens)):
        if tokens[i][1] == close:
            return i + 1
    raise PromQLError(f"no {close!r} after {' '.join(t for _, t in tokens[start:])!r}")


def _matchers(tokens: list[tuple[str, str]], start: int) -> tuple[Matchers, int]:
    """Label matchers from `{` at `start`; and the index after the closing `}`."""
    matchers, i = [], start + 1
    while tokens[i][1] != "}":
        try:
            (k1, label), (_, op), (k3, quoted) = tokens[i : i + 3]
        except ValueError as exc:
            raise PromQLError("unterminated label matchers") from exc
        if k1 != "ident" or op not in ("=", "!=", "=~", "!~") or k3 != "string":
            raise PromQLError(f"bad label matcher {label} {op} {quoted}")
        value = json.loads(quoted) if quoted.startswith('"') else quoted[1:-1]
        matchers.append((label, op, value))
        i += 3
        if tokens[i][1] == ",":
            i += 1
    return tuple(matchers), i + 1


def selectors(expr: str) -> list[Selector]:
    """The vector selectors of a PromQL expression (a Grafana query's `$variables` allowed).

    Function and aggregation names, keywords, label lists (`by (le)`), ranges (`[5m]`) and label
    matchers are not metrics; every other identifier is. A call of an unknown function is an error.
    """
    tokens = _tokens(expr)
    found, i = [], 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if text == "[":  # a range or subquery: durations and variables only
            i = _closing(tokens, i, "]")
        elif text == "{":
            matchers, i = _matchers(tokens, i)
            found.append(Selector("", matchers))
        elif kind != "ident":
            i += 1
        elif text in GROUPING and following == "(":
            i = _closing(tokens, i + 1, ")")
        elif following == "(":
            if text not in FUNCTIONS | AGGREGATIONS:
                raise PromQLError(f"unknown function {text}()")
            i += 1
        elif text in KEYWORDS or text in AGGREGATIONS:
            i += 1
        elif following == "{":
            matchers, i = _matchers(tokens, i + 1)
            found.append(Selector(text, matchers))
        else:
            found.append(Selector(text))
            i += 1
    return found


# --- the expressions of the rules and the dashboard -----------------------------------------------

#: `{{ query "..." }}` / `{{ range query `...` }}` in an annotation: PromQL too.
_TEMPLATE_QUERY = re.compile(r"\bquery\s+(`[^`]*`|\"(?:\\.|[^\"\\])*\")")


def rule_expressions(rules_file: dict[str, Any]) -> dict[str, str]:
    """{where: PromQL} for every rule's expr and every query inside its annotations."""
    out = {}
    for group in rules_file["groups"]:
        for rule in group.get("rules") or []:
            name = rule.get("alert") or rule.get("record")
            out[f"alerts.yml {name}: expr"] = rule["expr"]
            for key, text in (rule.get("annotations") or {}).items():
                for n, match in enumerate(_TEMPLATE_QUERY.finditer(text)):
                    quoted = match.group(1)
                    query = quoted[1:-1] if quoted.startswith("`") else json.loads(quoted)
                    out[f"alerts.yml {name}: annotation {key} query {n}"] = query
    return out


def dashboard_expressions(dashboard: dict[str, Any]) -> dict[str, str]:
    """{where: PromQL} for every panel's targets and every annotation query."""
    out = {}
    for panel in iter_panels(dashboard["panels"]):
        for target in panel.get("targets") or []:
            out[f"panel {panel.get('title')!r} target {target.get('refId')}"] = target["expr"]
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            out[f"annotation {annotation.get('name')!r}"] = annotation["expr"]
    return out


# --- the checks, as functions that list what is wrong (so that a test can show each one fails) ---


@dataclass(frozen=True)
class Exported:
    """What the API's /metrics really has: sample names with their label names, and routes."""

    labels: dict[str, frozenset[str]]
    routes: frozenset[str]


def metric_problems(expressions: dict[str, str], exported: Exported) -> list[str]:
    """Metrics, label names and route values that the expressions query but the API lacks."""
    known = {name: labels | TARGET_LABELS for name, labels in exported.labels.items()}
    known |= {name: labels | TARGET_LABELS for name, labels in PROMETHEUS_SERIES.items()}
    problems = []
    for where, expr in expressions.items():
        try:
            found = selectors(expr)
        except PromQLError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if not found:
            problems.append(f"{where}: queries no metric")
        for selector in found:
            if selector.metric not in known:
                problems.append(f"{where}: unknown metric {selector.metric!r}")
                continue
            for label, op, value in selector.matchers:
                if label not in known[selector.metric]:
                    problems.append(f"{where}: {selector.metric} has no label {label!r}")
                elif label == "route":
                    # A renamed route would silently empty the query: each path must exist.
                    paths = value.split("|") if op in ("=~", "!~") else [value]
                    problems += [
                        f"{where}: no route {path!r} in the app"
                        for path in paths
                        if re.fullmatch(r"[\w/.{}-]+", path) and path not in exported.routes
                    ]
    return problems


def datasource_problems(dashboard: dict[str, Any], uid: str) -> list[str]:
    """Every data source reference in the dashboard that is not the provisioned one."""
    problems = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource":
                    if not isinstance(value, dict) or value.get("uid") != uid:
                        problems.append(f"{path}/datasource is {value!r}, not uid {uid!r}")
                else:
                    walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for n, item in enumerate(node):
                walk(item, f"{path}/{n}")

    walk(dashboard, "")
    for panel in iter_panels(dashboard["panels"]):
        if panel.get("type") != "row" and "datasource" not in panel:
            problems.append(f"panel {panel.get('title')!r} names no data source")
        problems += [
            f"panel {panel.get('title')!r} target {target.get('refId')} names no data source"
            for target in panel.get("targets") or []
            if "datasource" not in target
        ]
    return problems


def rule_problems(rules_file: dict[str, Any]) -> list[str]:
    """Alerts without `for`, with a severity other than warning/critical, or thin annotations."""
    problems = []
    names: list[str] = []
    for rule in alerting_rules(rules_file):
        name = rule["alert"]
        names.append(name)
        if not rule.get("for"):
            problems.append(f"{name}: no `for:` (a single bad scrape would fire it)")
        severity = (rule.get("labels") or {}).get("severity")
        if severity not in SEVERITIES:
            problems.append(f"{name}: severity {severity!r} is not one of {sorted(SEVERITIES)}")
        annotations = rule.get("annotations") or {}
        for key in ("summary", "description"):
            if not str(annotations.get(key, "")).strip():
                problems.append(f"{name}: no {key} annotation")
        if name not in VALUE_FREE_ALERTS and "$value" not in annotations.get("description", ""):
            problems.append(f"{name}: the description does not show the value ({{{{ $value }}}})")
    problems += [f"{name}: defined twice" for name in sorted(set(names)) if names.count(name) > 1]
    return problems


def layout_problems(dashboard: dict[str, Any]) -> list[str]:
    """Panels outside the 24 columns, overlapping, or sharing an id."""
    problems: list[str] = []
    ids = [panel["id"] for panel in iter_panels(dashboard["panels"])]
    problems += [f"panel id {i} used twice" for i in sorted(set(ids)) if ids.count(i) > 1]
    placed: list[tuple[str, dict[str, int]]] = []
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        if pos["x"] + pos["w"] > 24:
            problems.append(f"panel {panel['title']!r} goes past column 24")
        problems += [
            f"panel {panel['title']!r} overlaps {title!r}"
            for title, other in placed
            if pos["x"] < other["x"] + other["w"]
            and other["x"] < pos["x"] + pos["w"]
            and pos["y"] < other["y"] + other["h"]
            and other["y"] < pos["y"] + pos["h"]
        ]
        placed.append((panel["title"], pos))
    return problems


# --- fixtures -------------------------------------------------------------------------------------


#: Requests that give every route a rule or a panel names a series of its own in /metrics.
ROUTE_REQUESTS = (
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("POST", "/predict/batch"),
)


@pytest.fixture
def exported(tmp_path: Path, make_fraud_model: MakeModel) -> Exported:
    """/metrics of the real app serving a real bundle, after a legitimate and a fraud prediction.

    Routes are the `route` labels the app really gave those requests (FastAPI's router does not
    list included routes by path): a renamed route leaves its old name out.
    """
    store = ModelStore(tmp_path / "models")
    publish(store, make_fraud_model(seed=1, threshold=THRESHOLD), V1)
    # A drift report, as Dagster's prediction_drift stores it, so the drift gauges are exported.
    settings = make_settings(store.root)
    details = {"features": {"V4": {"psi": 0.3, "ks_statistic": 0.2}}, "score_psi": 0.01}
    save_report(make_engine(str(settings.prediction_log_url)), "fail", 5_000, 900, details)
    with TestClient(create_app(settings)) as client:
        for record in (transaction(), transaction(**FRAUD_PATTERN)):
            response = client.post("/predict", json=record)
            assert response.status_code == 200, response.text
        for method, path in ROUTE_REQUESTS:
            body = [transaction()] if method == "POST" else None
            assert client.request(method, path, json=body).status_code == 200, path
        scraped = client.get("/metrics")
    assert scraped.status_code == 200
    labels: dict[str, set[str]] = {}
    routes: set[str] = set()
    for family in text_string_to_metric_families(scraped.text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
            if sample.name == "fraud_api_requests_total":
                routes.add(sample.labels["route"])
    return Exported({k: frozenset(v) for k, v in labels.items()}, frozenset(routes))


@pytest.fixture
def rules() -> dict[str, Any]:
    return dict(load_yaml(ALERTS_YML))


@pytest.fixture
def dashboard() -> dict[str, Any]:
    return dict(load_json(DASHBOARD_JSON))


# --- promtool -------------------------------------------------------------------------------------


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def render_local_config(directory: Path, target: str = "127.0.0.1:8000") -> Path:
    """What `make stack` writes: the local template filled in, in a directory of its own."""
    text = string.Template(LOCAL_TEMPLATE.read_text()).substitute(
        FRAUD_API_TARGET=target, FRAUD_ALERT_RULES=str(ALERTS_YML)
    )
    path = directory / "prometheus.yml"
    path.write_text(text)
    return path


@needs_promtool
def test_promtool_accepts_the_compose_config_and_the_rules_it_loads() -> None:
    result = promtool("check", "config", PROMETHEUS_YML)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout, result.stdout
    assert "is valid prometheus config file syntax" in result.stdout
    rule_count = sum(1 for _ in alerting_rules(load_yaml(ALERTS_YML)))
    assert f"SUCCESS: {rule_count} rules found" in result.stdout, result.stdout


@needs_promtool
def test_promtool_accepts_the_rendered_local_config(tmp_path: Path) -> None:
    result = promtool("check", "config", render_local_config(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout, result.stdout


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", ALERTS_YML)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = promtool("test", "rules", ALERTS_TEST_YML)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


#: Grafana's variables, as Grafana fills them in before Prometheus sees a query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "6h"}


def as_recording_rules(expressions: dict[str, str]) -> dict[str, Any]:
    """The expressions as a rules file, so that promtool parses them with Prometheus' parser."""
    rules = []
    for n, expr in enumerate(expressions.values()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{n}", "expr": expr})
    return {"groups": [{"name": "dashboard", "rules": rules}]}


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path, dashboard: dict[str, Any]) -> None:
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump(as_recording_rules(dashboard_expressions(dashboard))))
    result = promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_refuses_a_dashboard_query_that_does_not_parse(
    tmp_path: Path, dashboard: dict[str, Any]
) -> None:
    expressions = dashboard_expressions(dashboard)
    where = next(iter(expressions))
    expressions[where] = expressions[where].replace("(", "", 1)
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump(as_recording_rules(expressions)))
    assert promtool("check", "rules", path).returncode != 0


@needs_promtool
def test_promtool_refuses_a_rule_that_does_not_parse(tmp_path: Path) -> None:
    broken = tmp_path / "alerts.yml"
    broken.write_text(ALERTS_YML.read_text().replace('up{job="fraud-api"} == 0', "up{job= == 0"))
    result = promtool("check", "rules", broken)
    assert result.returncode != 0
    assert "FraudApiDown" in result.stdout + result.stderr


@needs_promtool
@pytest.mark.parametrize(
    ("alert", "old", "new"),
    [
        ("FraudApiHighErrorRate", "  > 0.05\n", "  > 0.5\n"),
        ("FraudApiPredictLatencyHigh", ") > 0.1\n", ") > 1\n"),
        ("FraudDriftFail", "== 2\n", "== 3\n"),
        ("FraudPredictionLogDropping", 'reason!="duplicate_id"', 'reason!="queue_full"'),
        ("FraudApiFraudRateHigh", ">= 500\n", ">= 5000\n"),
        ("FraudDriftReportStale", "> 2 * 86400", "> 3 * 86400"),
    ],
    ids=[
        "error threshold",
        "latency threshold",
        "drift fail level",
        "drop reasons",
        "fraud rate volume",
        "report age",
    ],
)
def test_the_unit_tests_pin_each_threshold(tmp_path: Path, alert: str, old: str, new: str) -> None:
    """A changed threshold in a copy of the rules makes `promtool test rules` fail on that alert."""
    text = ALERTS_YML.read_text()
    assert text.count(old) == 1, f"{old!r} should occur once in alerts.yml"
    (tmp_path / "alerts.yml").write_text(text.replace(old, new))
    shutil.copy(ALERTS_TEST_YML, tmp_path / "alerts_test.yml")
    result = promtool("test", "rules", tmp_path / "alerts_test.yml")
    assert result.returncode != 0, result.stdout
    assert f"alertname: {alert}" in result.stdout + result.stderr


# --- Prometheus files as data (always) ------------------------------------------------------------


def test_prometheus_scrapes_the_api_where_compose_runs_it() -> None:
    config = load_yaml(PROMETHEUS_YML)
    assert config["global"]["scrape_interval"] == "15s"
    assert config["rule_files"] == ["alerts.yml"]
    assert (PROMETHEUS_DIR / "alerts.yml").is_file()
    (job,) = config["scrape_configs"]
    assert job["job_name"] == JOB
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": [COMPOSE_TARGET]}]
    # The target is the compose service `api` on the port it listens on in its container.
    api = load_yaml(REPO / "docker-compose.yml")["services"]["api"]
    container_ports = {str(p).rsplit(":", 1)[-1] for p in api["ports"]}
    assert COMPOSE_TARGET.split(":")[1] in container_ports, api["ports"]


def test_the_local_template_is_the_compose_config_with_two_values_filled_in(
    tmp_path: Path,
) -> None:
    template = string.Template(LOCAL_TEMPLATE.read_text())
    assert set(template.get_identifiers()) == {"FRAUD_API_TARGET", "FRAUD_ALERT_RULES"}
    local = load_yaml(render_local_config(tmp_path, target="127.0.0.1:8123"))
    assert local["rule_files"] == [str(ALERTS_YML)]
    assert local["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:8123"]}]
    expected = load_yaml(PROMETHEUS_YML)
    expected["rule_files"] = [str(ALERTS_YML)]
    expected["scrape_configs"][0]["static_configs"] = [{"targets": ["127.0.0.1:8123"]}]
    assert local == expected


def test_the_vendored_schemas_are_valid_draft7() -> None:
    for name in ("prometheus.rules.json", "grafana-dashboard.json"):
        jsonschema.Draft7Validator.check_schema(load_json(SCHEMAS / name))


def test_the_alert_rules_match_the_prometheus_rules_schema(rules: dict[str, Any]) -> None:
    assert schema_errors(rules, "prometheus.rules.json") == []


def test_the_rules_schema_refuses_a_broken_rules_file(rules: dict[str, Any]) -> None:
    broken = copy.deepcopy(rules)
    first = broken["groups"][0]["rules"][0]
    first["for"] = "5 minutes"
    first["severity"] = "critical"  # belongs under labels
    errors = schema_errors(broken, "prometheus.rules.json")
    assert errors
    assert any("groups/0/rules/0" in error for error in errors), errors


def test_every_alert_has_for_a_known_severity_and_annotations(
    rules: dict[str, Any],
) -> None:
    assert len(list(alerting_rules(rules))) >= 9
    assert rule_problems(rules) == []


def test_the_rule_check_catches_a_bad_severity_and_a_missing_description(
    rules: dict[str, Any],
) -> None:
    broken = copy.deepcopy(rules)
    rule = next(alerting_rules(broken))
    rule["labels"]["severity"] = "page"
    del rule["annotations"]["description"]
    del rule["for"]
    problems = rule_problems(broken)
    name = rule["alert"]
    assert f"{name}: severity 'page' is not one of ['critical', 'warning']" in problems
    assert f"{name}: no description annotation" in problems
    assert any(p.startswith(f"{name}: no `for:`") for p in problems)


def test_the_unit_tests_cover_the_key_alerts_both_ways(rules: dict[str, Any]) -> None:
    """Each key alert is expected to fire somewhere and expected silent somewhere.

    promtool passes a test of a misspelt alert name that expects nothing, so the names are
    checked against the rules here.
    """
    defined = {rule["alert"] for rule in alerting_rules(rules)}
    firing: set[str] = set()
    silent: set[str] = set()
    unit_tests = load_yaml(ALERTS_TEST_YML)
    assert unit_tests["rule_files"] == ["alerts.yml"]
    for test in unit_tests["tests"]:
        for case in test.get("alert_rule_test") or []:
            assert case["alertname"] in defined, f"{case['alertname']} is not in alerts.yml"
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    assert firing >= UNIT_TESTED_ALERTS, UNIT_TESTED_ALERTS - firing
    assert silent >= UNIT_TESTED_ALERTS, UNIT_TESTED_ALERTS - silent


# --- Grafana (always) -----------------------------------------------------------------------------


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard_folder() -> None:
    (datasource,) = load_yaml(DATASOURCE_YML)["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["uid"]
    (provider,) = load_yaml(DASHBOARDS_YML)["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == DASHBOARDS_PATH


def test_the_dashboard_matches_our_schema(dashboard: dict[str, Any]) -> None:
    assert schema_errors(dashboard, "grafana-dashboard.json") == []
    assert dashboard["title"] == "Fraud API"
    assert layout_problems(dashboard) == []


def test_the_dashboard_schema_refuses_broken_panels(dashboard: dict[str, Any]) -> None:
    broken = copy.deepcopy(dashboard)
    data_panels = [p for p in broken["panels"] if p["type"] != "row"]
    del data_panels[0]["gridPos"]
    data_panels[1]["targets"] = []
    del data_panels[2]["targets"][0]["expr"]
    broken["schemaVersion"] = 27
    errors = schema_errors(broken, "grafana-dashboard.json")
    assert any("'gridPos' is a required property" in e for e in errors), errors
    assert any("should be non-empty" in e or "too short" in e for e in errors), errors
    assert any("'expr' is a required property" in e for e in errors), errors
    assert any(e.startswith("schemaVersion") for e in errors), errors


def test_the_dashboard_has_the_panels_an_operator_needs(dashboard: dict[str, Any]) -> None:
    panels = {p["title"]: p for p in iter_panels(dashboard["panels"])}
    exprs = "\n".join(dashboard_expressions(dashboard).values())
    assert panels["Score distribution"]["type"] == "heatmap"
    assert panels["Score distribution"]["targets"][0]["format"] == "heatmap"
    assert "fraud_api_fraud_probability_bucket" in exprs
    assert panels["PSI per feature"]["type"] == "bargauge"
    status = panels["Drift status"]
    assert status["type"] == "stat"
    (mapping,) = [m for m in status["fieldConfig"]["defaults"]["mappings"] if m["type"] == "value"]
    assert {k: v["text"] for k, v in mapping["options"].items()} == {
        "0": "ok",
        "1": "warn",
        "2": "fail",
    }
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, " in exprs
    for name in (
        "fraud_api_requests_total",
        "fraud_api_predictions_total",
        "fraud_api_model_info",
        "fraud_api_prediction_log_written_total",
        "fraud_api_prediction_log_dropped_total",
        "fraud_api_prediction_log_queue_depth",
        "fraud_api_feedback_total",
        "fraud_drift_score_psi",
    ):
        assert name in exprs, name


def test_every_panel_queries_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    assert datasource_problems(dashboard, provisioned_uid()) == []


def test_the_datasource_check_catches_a_wrong_uid(dashboard: dict[str, Any]) -> None:
    broken = copy.deepcopy(dashboard)
    panel = next(p for p in broken["panels"] if p["type"] == "timeseries")
    panel["targets"][0]["datasource"]["uid"] = "prometheus-old"
    problems = datasource_problems(broken, provisioned_uid())
    assert len(problems) == 1, problems
    assert "'prometheus-old'" in problems[0]


# --- every metric queried is one the API exports --------------------------------------------------


def test_the_promql_reader_finds_metrics_and_matchers() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, route) ("
        'rate(fraud_api_request_duration_seconds_bucket{job="fraud-api", '
        'route=~"/predict|/predict/batch"}[$__rate_interval]))) > 0.1'
        " and on (job) up == 1 unless time() - fraud_drift_status offset 5m > 2 * 86400"
    )
    assert selectors(expr) == [
        Selector(
            "fraud_api_request_duration_seconds_bucket",
            (("job", "=", "fraud-api"), ("route", "=~", "/predict|/predict/batch")),
        ),
        Selector("up"),
        Selector("fraud_drift_status"),
    ]
    assert selectors("sum without (instance) (rate(x_total[5m:1m]))") == [Selector("x_total")]
    with pytest.raises(PromQLError, match=r"unknown function rat\(\)"):
        selectors("rat(fraud_api_requests_total[5m])")


def test_alerts_and_dashboard_query_only_metrics_the_api_exports(
    exported: Exported, rules: dict[str, Any], dashboard: dict[str, Any]
) -> None:
    # The scrape is real: the API's own metrics are there, histograms as _bucket/_sum/_count.
    assert {"fraud_api_requests_total", "fraud_api_request_duration_seconds_bucket"} <= set(
        exported.labels
    )
    assert exported.labels["fraud_api_requests_total"] >= {"route", "method", "status"}
    expressions = rule_expressions(rules) | dashboard_expressions(dashboard)
    # The drift annotations' queries are read too.
    assert any("annotation description query" in where for where in expressions)
    assert metric_problems(expressions, exported) == []
    queried = {s.metric for expr in expressions.values() for s in selectors(expr)}
    # Every drift gauge is watched somewhere.
    assert queried >= DRIFT_METRICS


def test_the_metric_check_catches_unknown_metrics_labels_and_routes(
    exported: Exported, rules: dict[str, Any]
) -> None:
    broken = copy.deepcopy(rules)
    broken["groups"][0]["rules"] += [
        {"alert": "Typo", "expr": "rate(fraud_api_predictons_total[5m]) > 0"},
        {"alert": "LabelTypo", "expr": 'fraud_api_predictions_total{decison="fraud"} > 0'},
        {"alert": "OldRoute", "expr": 'fraud_api_requests_total{route="/score"} > 0'},
        {"alert": "NotDrift", "expr": "fraud_drift_mean_shift > 0"},
    ]
    problems = metric_problems(rule_expressions(broken), exported)
    assert problems == [
        "alerts.yml Typo: expr: unknown metric 'fraud_api_predictons_total'",
        "alerts.yml LabelTypo: expr: fraud_api_predictions_total has no label 'decison'",
        "alerts.yml OldRoute: expr: no route '/score' in the app",
        "alerts.yml NotDrift: expr: unknown metric 'fraud_drift_mean_shift'",
    ]
