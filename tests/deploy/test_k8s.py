"""The Kubernetes manifests of k8s/: valid objects, and the ports, settings and images of compose.

There is no cluster and no `helm` here: each manifest is validated against the Kubernetes API's
own schemas (kubernetes-validate, strict: unknown fields are errors), and the Dagster chart's
values against the keys chart 1.13 documents and the K8sRunLauncher config of the installed
dagster-k8s (k8s/README.md says why the chart's values.schema.json itself is not used).
"""

from __future__ import annotations

import ast
import copy
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import AliasChoices

from api.config import Settings
from fraud_core.settings import PlatformSettings
from servicectl.stack import BY_NAME, TRAINING_ENV
from tests.deploy._files import REPO, environment, healthcheck_test, load_compose, parse_dockerfile

K8S = REPO / "k8s"
#: The oldest Kubernetes the manifests promise to work on, and the newest the validator knows.
VERSIONS = ("1.30", kubernetes_validate.utils.major_minor(kubernetes_validate.latest_version()))
#: Files of k8s/ that `kubectl apply -k` must not apply: a template of placeholders, Helm values.
NOT_RESOURCES = {"kustomization.yaml", "secrets.example.yaml", "dagster/values.yaml"}
WORKLOADS = ("Deployment", "StatefulSet")
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY)($|_)")
NOT_SECRETS = frozenset({"FRAUD_API_REQUIRE_SCORE_KEY"})
URL_PASSWORD = re.compile(r"://[^/@\s:]+:([^@\s]+)@")
PLACEHOLDER = "REPLACE_ME"
#: Read from the environment outside the settings classes: by botocore/s3fs for the bucket of
#: FRAUD_STORAGE_ROOT (fraud_assets/defs/io_managers.py), and by the Dask client of the heavy steps.
READ_OUTSIDE_SETTINGS = {
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "FRAUD_DASK_ADDRESS",
}


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def kustomization() -> dict[str, Any]:
    (doc,) = documents("kustomization.yaml")
    return doc


def manifests() -> list[dict[str, Any]]:
    """Every object `kubectl apply -k k8s/` creates."""
    return [d for name in kustomization()["resources"] for d in documents(name)]


def find(kind: str, name: str, docs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    (doc,) = [d for d in docs or manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def container(kind: str, name: str) -> dict[str, Any]:
    (only,) = find(kind, name)["spec"]["template"]["spec"]["containers"]
    return dict(only)


def values() -> dict[str, Any]:
    return dict(yaml.safe_load((K8S / "dagster/values.yaml").read_text()))


def user_deployment(data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one user deployment of the values (the object itself: changing it changes `data`)."""
    (deployment,) = (data or values())["dagster-user-deployments"]["deployments"]
    assert isinstance(deployment, dict)
    return deployment


def config_map(name: str) -> dict[str, str]:
    return dict(find("ConfigMap", name)["data"])


def aliases(*models: type[Any]) -> set[str]:
    """The environment variables pydantic-settings models read."""
    names: set[str] = set()
    for model in models:
        for field in model.model_fields.values():
            alias = field.validation_alias
            if isinstance(alias, str):
                names.add(alias)
            elif isinstance(alias, AliasChoices):
                names |= {c for c in alias.choices if isinstance(c, str)}
    return names


def pod_env_names(spec: dict[str, Any]) -> set[str]:
    """The variables a container gets: its `env` and the keys of the ConfigMaps it reads."""
    names = {e["name"] for e in spec.get("env", [])}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            names |= set(config_map(source["configMapRef"]["name"]))
    return names


def image_name(image: str) -> str:
    return image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image


def compose_services() -> dict[str, dict[str, Any]]:
    return dict(load_compose("docker-compose.yml")["services"])


# --- every object is a valid Kubernetes object ----------------------------------------------------


@pytest.mark.parametrize("name", ["secrets.example.yaml", *kustomization()["resources"]])
@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_strictly(name: str, version: str) -> None:
    docs = documents(name)
    assert docs, f"{name} holds no object"
    for doc in docs:
        assert kubernetes_validate.validate(doc, version, strict=True) == version


def test_the_validator_rejects_a_broken_copy() -> None:
    text = (K8S / "api.yaml").read_text()
    broken = text.replace("containerPort: 8080", 'containerPort: "eighty"')
    assert broken != text
    deployment = next(yaml.safe_load_all(broken))
    with pytest.raises(kubernetes_validate.ValidationError) as error:
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)
    assert "containerPort" in list(error.value.absolute_path)
    # Strict: a misspelt field is an error, not a field Kubernetes would silently drop.
    typo = next(yaml.safe_load_all(text.replace("readinessProbe:", "readinesProbe:")))
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(typo, VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    doc = kustomization()
    assert doc["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert doc["kind"] == "Kustomization"
    assert set(doc) <= {"apiVersion", "kind", "namespace", "resources"}
    files = {str(p.relative_to(K8S)) for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml")}
    assert set(doc["resources"]) == files - NOT_RESOURCES
    assert len(doc["resources"]) == len(set(doc["resources"]))
    (namespace,) = [d for d in manifests() if d["kind"] == "Namespace"]
    assert doc["namespace"] == namespace["metadata"]["name"]
    assert not [d for d in manifests() if d["kind"] == "Secret"], "Secrets: the example only"


# --- the API --------------------------------------------------------------------------------------


def app_routes() -> set[str]:
    """The paths api/routes/health.py serves (read from the source: no app to start)."""
    tree = ast.parse((REPO / "api/routes/health.py").read_text())
    return {
        str(call.args[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for call in node.decorator_list
        if isinstance(call, ast.Call) and call.args and isinstance(call.args[0], ast.Constant)
    }


def test_api_port_and_probes_are_composes_and_servicectls() -> None:
    api, service = container("Deployment", "fraud-api"), BY_NAME["api"]
    (port,) = api["ports"]
    assert port["containerPort"] == service.container_port == 8080
    assert f"127.0.0.1:{port['containerPort']}{service.health_path}" in healthcheck_test(
        compose_services()["api"]
    )
    assert api["livenessProbe"]["httpGet"]["path"] == service.health_path == "/health"
    assert api["startupProbe"]["httpGet"]["path"] == service.health_path
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert {"/health", "/ready"} <= app_routes()
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert api[probe]["httpGet"]["port"] in (port["name"], port["containerPort"])
    (svc_port,) = find("Service", "fraud-api")["spec"]["ports"]
    assert svc_port["port"] == service.default_port == 8000
    assert svc_port["targetPort"] == port["containerPort"]
    assert compose_services()["api"]["ports"] == ["${FRAUD_API_PORT:-8000}:8080"]
    assert image_name(api["image"]) == compose_services()["api"]["image"]
    assert "EXPOSE 8080" in (REPO / "api/Dockerfile").read_text()


def test_api_env_is_what_its_settings_read() -> None:
    api = container("Deployment", "fraud-api")
    names = pod_env_names(api)
    assert names - aliases(Settings, PlatformSettings) == set()
    # servicectl's variables for the API, the models folder aside: the replicas serve the
    # registry's alias instead of a shared volume.
    assert set(BY_NAME["api"].env) - {"FRAUD_MODELS_DIR"} <= names
    assert "FRAUD_MODELS_DIR" not in names
    env = config_map("fraud-api-config")
    compose = environment(compose_services()["api"])
    for key in ("FRAUD_FEATURE_STATE", "MLFLOW_TRACKING_URI", "FRAUD_API_REQUIRE_SCORE_KEY"):
        assert env[key] == compose[key], key
    name, _, alias = env["FRAUD_MODEL_URI"].removeprefix("models:/").partition("@")
    platform = config_map("fraud-platform-config")
    default = PlatformSettings.model_fields["registered_model"].default
    assert name == platform["FRAUD_REGISTERED_MODEL"] == default
    tracking = ast.parse((REPO / "fraud_core/tracking.py").read_text())
    assert f"CHAMPION = {alias!r}" in {ast.unparse(n) for n in tracking.body}
    assert env["MLFLOW_TRACKING_URI"] == platform["MLFLOW_TRACKING_URI"]


# --- secrets --------------------------------------------------------------------------------------


def containers_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] not in WORKLOADS:
        return []
    spec = doc["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def secret_problems(docs: list[dict[str, Any]], example: list[dict[str, Any]]) -> list[str]:
    """What puts a secret value in a manifest, or reads a Secret or ConfigMap that is not there."""
    problems = []
    secrets = {d["metadata"]["name"]: set(d["stringData"]) for d in example}
    maps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "ConfigMap":
            for key, value in doc["data"].items():
                if SECRET_NAME.search(key) and key not in NOT_SECRETS:
                    problems.append(f"{where}: {key}")
                if URL_PASSWORD.search(value):
                    problems.append(f"{where}: {key} has a password")
        for spec in containers_of(doc):
            for env in spec.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if (
                    ref is None
                    and SECRET_NAME.search(env["name"])
                    and env["name"] not in NOT_SECRETS
                ):
                    problems.append(f"{where}: {env['name']} is not a secretKeyRef")
                if URL_PASSWORD.search(str(env.get("value", ""))):
                    problems.append(f"{where}: {env['name']} has a password")
                if ref is not None and ref["key"] not in secrets.get(ref["name"], set()):
                    problems.append(f"{where}: no Secret {ref['name']} with {ref['key']}")
            for source in spec.get("envFrom", []):
                kind, ref = next(iter(source.items()))
                known = {"configMapRef": maps, "secretRef": set(secrets)}.get(kind, set())
                if ref["name"] not in known:
                    problems.append(f"{where}: envFrom {kind} {ref['name']} is not defined")
    return problems


def test_secrets_only_through_references() -> None:
    assert secret_problems(manifests(), documents("secrets.example.yaml")) == []


def test_a_secret_in_a_manifest_is_caught() -> None:
    docs = copy.deepcopy(manifests())
    api = find("Deployment", "fraud-api", docs)["spec"]["template"]["spec"]["containers"][0]
    api["env"][0] = {"name": "FRAUD_PREDICTION_LOG_URL", "value": "postgresql://u:hunter2@db/p"}
    api["env"].append({"name": "FRAUD_API_RELOAD_TOKEN", "value": "hunter2"})
    find("ConfigMap", "fraud-api-config", docs)["data"]["AWS_SECRET_ACCESS_KEY"] = "x"
    assert secret_problems(docs, documents("secrets.example.yaml")) == [
        "ConfigMap/fraud-api-config: AWS_SECRET_ACCESS_KEY",
        "Deployment/fraud-api: FRAUD_PREDICTION_LOG_URL has a password",
        "Deployment/fraud-api: FRAUD_API_RELOAD_TOKEN is not a secretKeyRef",
    ]


def test_the_secrets_example_holds_only_placeholders() -> None:
    example = documents("secrets.example.yaml")
    assert {d["kind"] for d in example} == {"Secret"}
    for secret in example:
        assert "data" not in secret, "base64 `data` would hide what is in it"
        for key, value in secret["stringData"].items():
            assert PLACEHOLDER in value, f"{secret['metadata']['name']}: {key}"
            assert all(p == PLACEHOLDER for p in URL_PASSWORD.findall(value)), key


# --- the objects refer to each other -----------------------------------------------------------


def test_services_hpa_and_pdb_select_the_pods_they_mean() -> None:
    docs = manifests()
    pods = {d["metadata"]["name"]: d for d in docs if d["kind"] in WORKLOADS}

    def matched(selector: dict[str, str]) -> list[str]:
        labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in pods.items()}
        return [n for n, pod_labels in labels.items() if selector.items() <= pod_labels.items()]

    for doc in docs:
        if doc["kind"] in WORKLOADS:  # a Deployment's selector selects its own pods
            assert matched(doc["spec"]["selector"]["matchLabels"]) == [doc["metadata"]["name"]]
    for service in (d for d in docs if d["kind"] == "Service"):
        (target,) = matched(service["spec"]["selector"])
        ports = [p for c in containers_of(pods[target]) for p in c["ports"]]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in [p["containerPort"] for p in ports], service
    hpa, pdb = (
        find("HorizontalPodAutoscaler", "fraud-api"),
        find("PodDisruptionBudget", "fraud-api"),
    )
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", "fraud-api")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    # Utilisation is measured against the requests: without them the autoscaler does nothing.
    assert container("Deployment", "fraud-api")["resources"]["requests"]["cpu"]
    assert pdb["spec"]["minAvailable"] == 1
    assert matched(pdb["spec"]["selector"]["matchLabels"]) == ["fraud-api"]
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]


def test_pods_run_as_their_images_user_with_limits_and_probes() -> None:
    compose = compose_services().values()
    built = {s["image"]: s["build"]["dockerfile"] for s in compose if "build" in s}
    for doc in (d for d in manifests() if d["kind"] in WORKLOADS):
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        for spec in pod["containers"]:
            assert {"requests", "limits"} <= set(spec["resources"]), spec["name"]
            assert {"livenessProbe", "readinessProbe"} <= set(spec), spec["name"]
            assert spec["securityContext"]["allowPrivilegeEscalation"] is False
            dockerfile = built.get(image_name(spec["image"]))
            if dockerfile:
                uid = re.search(r"useradd --uid (\d+)", (REPO / dockerfile).read_text())
                assert uid and pod["securityContext"]["runAsUser"] == int(uid.group(1))


def test_mlflow_and_redis_are_composes() -> None:
    compose = compose_services()
    mlflow, redis = container("Deployment", "mlflow"), container("StatefulSet", "redis")
    assert image_name(mlflow["image"]) == compose["mlflow"]["image"]
    assert mlflow["ports"][0]["containerPort"] == BY_NAME["mlflow"].container_port
    assert mlflow["livenessProbe"]["httpGet"]["path"] == BY_NAME["mlflow"].health_path
    (port,) = find("Service", "mlflow")["spec"]["ports"]
    url = f"http://mlflow:{port['port']}"
    assert config_map("fraud-platform-config")["MLFLOW_TRACKING_URI"] == url
    assert url == environment(compose["dagster-code"])["MLFLOW_TRACKING_URI"]
    env = {e["name"]: e for e in mlflow["env"]}
    assert "mlflow:*" in env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]["name"] == "fraud-mlflow"
    assert redis["image"] == compose["redis"]["image"]
    assert redis["args"] == compose["redis"]["command"]
    (port,) = find("Service", "redis")["spec"]["ports"]
    assert (
        config_map("fraud-api-config")["FRAUD_FEATURE_STATE"] == f"redis://redis:{port['port']}/0"
    )


def test_dask_workers_find_the_scheduler_service() -> None:
    scheduler, worker = (
        container("Deployment", "dask-scheduler"),
        container("Deployment", "dask-worker"),
    )
    dagster_image = compose_services()["dagster-code"]["image"]
    assert image_name(scheduler["image"]) == image_name(worker["image"]) == dagster_image
    assert scheduler["command"] == ["dask", "scheduler"] and worker["command"] == ["dask", "worker"]
    comm = scheduler["args"][scheduler["args"].index("--port") + 1]
    ports = {p["name"]: p["port"] for p in find("Service", "dask-scheduler")["spec"]["ports"]}
    address = f"tcp://dask-scheduler:{ports['tcp-comm']}"
    assert str(ports["tcp-comm"]) == comm
    assert worker["args"][0] == address == config_map("fraud-platform-config")["FRAUD_DASK_ADDRESS"]


# --- the Dagster chart's values ----------------------------------------------------------------


def keys(names: str, **nested: Any) -> dict[str, Any]:
    """A mapping's documented keys: `names` hold values, `nested` mappings (or, as a list of one
    mapping, lists of them)."""
    return dict.fromkeys(names.split()) | nested


USER_DEPLOYMENT = keys(
    "name dagsterApiGrpcArgs codeServerArgs deploymentNamespace port env envConfigMaps envSecrets "
    "annotations nodeSelector affinity tolerations podSecurityContext securityContext resources "
    "livenessProbe readinessProbe startupProbe labels volumeMounts volumes schedulerName "
    "initContainers sidecarContainers",
    image=keys("repository tag pullPolicy"),
    includeConfigInLaunchedRuns=keys("enabled"),
)
K8S_RUN_LAUNCHER = keys(
    "image imagePullPolicy jobNamespace loadInclusterConfig kubeconfigFile envConfigMaps "
    "envSecrets envVars volumeMounts volumes labels failPodOnRunFailure resources schedulerName "
    "securityContext",
    runK8sConfig=keys(
        "containerConfig podSpecConfig podTemplateSpecMetadata jobSpecConfig jobMetadata"
    ),
)
#: The keys chart 1.13 documents (its values.yaml and values.schema.json: dagster-io/dagster's
#: helm/dagster and helm/dagster/charts/dagster-user-deployments) in the sections used here. The
#: Kubernetes objects among the values: test_dagster_values_kubernetes_parts_are_valid.
CHART_KEYS = keys(
    "generatePostgresqlPasswordSecret",
    **{
        "global": keys("postgresqlSecretName dagsterHome serviceAccountName celeryConfigSecretName")
    },
    postgresql=keys(
        "enabled image postgresqlHost postgresqlUsername postgresqlPassword postgresqlDatabase "
        "postgresqlParams postgresqlScheme",
        service=keys("port"),
    ),
    telemetry=keys("enabled"),
    dagsterWebserver=keys(
        "replicaCount image service env envConfigMaps envSecrets resources",
        workspace=keys("enabled externalConfigmap", servers=[keys("host port name ssl")]),
    ),
    **{
        "dagster-user-deployments": keys(
            "enabled enableSubchart imagePullSecrets", deployments=[USER_DEPLOYMENT]
        )
    },
    runLauncher=keys("type", config=keys("", k8sRunLauncher=K8S_RUN_LAUNCHER)),
)
PULL_POLICIES = {"Always", "IfNotPresent", "Never"}


def unknown_keys(data: Any, known: Any, path: str = "") -> Iterator[str]:
    if isinstance(known, list) and isinstance(data, list):
        for i, item in enumerate(data):
            yield from unknown_keys(item, known[0], f"{path}[{i}]")
    elif isinstance(known, dict) and isinstance(data, dict):
        for key, value in data.items():
            if key not in known:
                yield f"{path}.{key}".lstrip(".")
            else:
                yield from unknown_keys(value, known[key], f"{path}.{key}")


def literal_secrets(data: Any, path: str = "") -> Iterator[str]:
    """Keys named like a secret that hold a string (a Secret's name or a switch is not one)."""
    items = (
        data.items()
        if isinstance(data, dict)
        else enumerate(data if isinstance(data, list) else [])
    )
    for key, value in items:
        where = f"{path}.{key}".lstrip(".")
        if isinstance(value, str) and (
            SECRET_NAME.search(str(key).upper()) or URL_PASSWORD.search(value)
        ):
            yield where
        yield from literal_secrets(value, where)


def values_problems(data: dict[str, Any]) -> list[str]:
    problems = [f"not a documented key: {k}" for k in unknown_keys(data, CHART_KEYS)]
    problems += [f"a literal secret: {k}" for k in literal_secrets(data)]
    if data["runLauncher"]["type"] != "K8sRunLauncher":
        problems.append(f"runLauncher.type is {data['runLauncher']['type']}")
    if user_deployment(data)["image"]["pullPolicy"] not in PULL_POLICIES:
        problems.append("deployments[0].image.pullPolicy")
    return problems


def test_dagster_values_use_documented_chart_keys_and_no_secret() -> None:
    assert values_problems(values()) == []


def test_a_broken_values_file_is_caught() -> None:
    data = values()
    data["dagsterDeamon"] = {"enabled": True}
    user_deployment(data)["grpcArgs"] = ["-m", "x"]
    user_deployment(data)["image"]["pullPolicy"] = "Sometimes"
    data["postgresql"]["postgresqlPassword"] = "hunter2"
    data["runLauncher"]["type"] = "K8sLauncher"
    assert set(values_problems(data)) == {
        "not a documented key: dagsterDeamon",
        "not a documented key: dagster-user-deployments.deployments[0].grpcArgs",
        "a literal secret: postgresql.postgresqlPassword",
        "runLauncher.type is K8sLauncher",
        "deployments[0].image.pullPolicy",
    }


def test_dagster_values_kubernetes_parts_are_valid() -> None:
    """What the chart copies into its pods, as a Pod each: valid Kubernetes too."""
    deployment = user_deployment()
    launcher = values()["runLauncher"]["config"]["k8sRunLauncher"]
    env_from = [{"configMapRef": r} for r in deployment["envConfigMaps"]] + [
        {"secretRef": r} for r in deployment["envSecrets"]
    ]
    code = {k: deployment[k] for k in ("resources", "securityContext", "volumeMounts")}
    run = {"name": "run", "image": "i", "securityContext": launcher["securityContext"]}
    pods = [
        {
            "securityContext": deployment["podSecurityContext"],
            "volumes": deployment["volumes"],
            "containers": [{"name": "code", "image": "i", "envFrom": env_from, **code}],
        },
        {**launcher["runK8sConfig"]["podSpecConfig"], "containers": [run]},
    ]
    for spec in pods:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}
        for version in VERSIONS:
            assert kubernetes_validate.validate(pod, version, strict=True) == version


def test_k8s_run_launcher_keys_are_dagster_k8s_settings() -> None:
    """The chart turns k8sRunLauncher's keys into the K8sRunLauncher config of dagster.yaml: each
    must be a field of the installed dagster-k8s's launcher (0.29.27, dagster 1.13.27's)."""
    from dagster_k8s.launcher import K8sRunLauncher

    fields = set(K8sRunLauncher.config_type().keys())
    launcher = values()["runLauncher"]["config"]["k8sRunLauncher"]
    snake = {re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower() for key in launcher}
    assert snake <= fields


def test_dagster_user_deployment_is_the_code_image_and_workspace() -> None:
    data, deployment = values(), user_deployment()
    compose = compose_services()
    assert deployment["image"]["repository"] == compose["dagster-code"]["image"]
    dockerfile = parse_dockerfile(compose["dagster-code"]["build"]["dockerfile"])
    (cmd,) = dockerfile.of("CMD", dockerfile.final_stage)
    argv = json.loads(cmd.args)
    args = deployment["dagsterApiGrpcArgs"]
    assert args[args.index("-m") + 1] == argv[argv.index("-m") + 1] == "fraud_assets.definitions"
    assert str(deployment["port"]) == argv[argv.index("-p") + 1]
    (entry,) = yaml.safe_load((REPO / "fraud_assets/deploy/workspace.yaml").read_text())[
        "load_from"
    ]
    (server,) = data["dagsterWebserver"]["workspace"]["servers"]
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert server["name"] == entry["grpc_server"]["location_name"]
    assert server["name"] == pyproject["tool"]["dagster"]["code_location_name"]
    # The chart's Service of a user deployment is named after it.
    assert (server["host"], server["port"]) == (deployment["name"], deployment["port"])
    # Settings and volumes: the ConfigMap, Secret and claims exist, mounted where the env says.
    platform = config_map("fraud-platform-config")
    for key in ("FRAUD_STORAGE_ROOT", "FRAUD_DASK_ADDRESS", "MLFLOW_TRACKING_URI"):
        assert key in platform
    secrets = {d["metadata"]["name"]: d for d in documents("secrets.example.yaml")}
    assert deployment["envConfigMaps"] == [{"name": "fraud-platform-config"}]
    assert [r["name"] for r in deployment["envSecrets"]] == ["fraud-platform-env"]
    names = set(platform) | set(secrets["fraud-platform-env"]["stringData"])
    assert names - aliases(PlatformSettings) - READ_OUTSIDE_SETTINGS == set()
    # What `make stack` gives Dagster, less the instance's database (the chart's storage).
    assert set(TRAINING_ENV) - {"DAGSTER_POSTGRES_URL"} <= names
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in deployment["volumes"]}
    mounts = {m["mountPath"]: claims[m["name"]] for m in deployment["volumeMounts"]}
    expected = {
        platform["FRAUD_MODELS_DIR"]: "fraud-models",
        platform["FRAUD_DATA_DIR"]: "fraud-raw-data",
    }
    assert mounts == expected
    for claim in mounts.values():
        assert "ReadWriteMany" in find("PersistentVolumeClaim", claim)["spec"]["accessModes"]
    assert platform["FRAUD_MODELS_DIR"] == environment(compose["dagster-code"])["FRAUD_MODELS_DIR"]
    # PostgreSQL: external, the password from the Secret the chart is told about.
    assert data["postgresql"]["enabled"] is False
    assert data["generatePostgresqlPasswordSecret"] is False
    assert "postgresql-password" in secrets[data["global"]["postgresqlSecretName"]]["stringData"]
    assert data["postgresql"]["postgresqlDatabase"] == BY_NAME["dagster-webserver"].database


def test_readme_names_every_file() -> None:
    readme = (K8S / "README.md").read_text()
    for path in (Path(p) for p in [*kustomization()["resources"], *NOT_RESOURCES]):
        assert str(path) in readme, path
    assert "helm install dagster dagster/dagster --version 1.13.27" in readme
