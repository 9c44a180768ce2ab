"""The kustomize manifests, rendered and checked without a cluster.

Every overlay (found by glob) and the base are rendered with `kubectl kustomize`; every object
is validated against its schema (see manifest_checks) and the project's policy, and the values
that must agree with the code (image tags, the Ray version, the run config) are compared with
their source. Negative tests prove each check fails on a broken copy.
"""

import copy
import os
import shutil
import subprocess
import tomllib
from functools import cache
from pathlib import Path

import pytest
import yaml

from components.common.image import COMPONENT_IMAGE, IMAGE_TAG, SERVING_IMAGE
from tests.packaging.manifest_checks import (
    CRD_SCHEMAS,
    ManifestError,
    check_logger_target,
    check_policy,
    containers_of,
    crd_validator,
    validate_object,
)

ROOT = Path(__file__).parents[2]
MANIFESTS = ROOT / "manifests"
BASE = MANIFESTS / "base"
APPLICATION = MANIFESTS / "argocd" / "application.yaml"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# What gets rendered: the base and every overlay, by glob.
RENDERED = [BASE] + sorted(path.parent for path in MANIFESTS.glob("overlays/*/kustomization.yaml"))
IDS = [str(path.relative_to(MANIFESTS)) for path in RENDERED]
# Where the containers are, for the negative tests.
HEAD = "spec.headGroupSpec.template.spec.containers.0"
WORKER = "spec.workerGroupSpecs.0.template.spec.containers.0"
PREDICTOR = "spec.predictor.containers.0"
SINK_CONTAINER = "spec.template.spec.containers.0"
SINK = "mlpipe-prediction-sink"


def _pinned(package: str) -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.lower() == package:
            return version
    raise AssertionError(f"{package} is not pinned in constraints.txt")


@pytest.fixture(scope="session")
def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        message = "kubectl (with kustomize) is needed to render manifests/; `make test` installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@cache
def _render(folder: Path) -> tuple:
    result = subprocess.run(
        ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"kubectl kustomize {folder}: {result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


@pytest.fixture(params=RENDERED, ids=IDS)
def rendered(request, kubectl) -> list[dict]:
    """The objects of one rendered kustomization (deep copies: tests may change them)."""
    return copy.deepcopy(list(_render(request.param)))


def _one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _base_object(kind: str) -> dict:
    """A copy of the first object of a kind in the rendered base."""
    return copy.deepcopy(next(o for o in _render(BASE) if o["kind"] == kind))


# --- What is rendered --------------------------------------------------------------------------


def test_there_are_dev_and_prod_overlays():
    assert {"overlays/dev", "overlays/prod"} <= set(IDS)
    folders = [path for path in (MANIFESTS / "overlays").iterdir() if path.is_dir()]
    assert sorted(folders) == RENDERED[1:], "every overlay folder has a kustomization.yaml"


def test_every_kustomization_is_rendered():
    """No kustomization under manifests/ escapes rendering: each is the base, an overlay, or a
    folder that one of them includes."""
    reachable = set()

    def visit(folder: Path):
        folder = folder.resolve()
        if folder in reachable:
            return
        reachable.add(folder)
        spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
        for entry in (spec.get("resources") or []) + (spec.get("components") or []):
            path = folder / entry
            assert path.exists(), f"{folder}/kustomization.yaml: {entry} does not exist"
            if path.is_dir():
                visit(path)

    for folder in RENDERED:
        visit(folder)
    every = {path.parent.resolve() for path in MANIFESTS.glob("**/kustomization.yaml")}
    assert every <= reachable, f"never rendered: {sorted(map(str, every - reachable))}"


def test_renders_the_expected_objects(rendered):
    names = {(o["kind"], o["metadata"]["name"]) for o in rendered}
    assert names >= {
        ("Namespace", "mlpipe"),
        ("ServiceAccount", "mlpipe-pipeline"),
        ("Role", "mlpipe-pipeline"),
        ("RoleBinding", "mlpipe-pipeline"),
        ("RayCluster", "mlpipe-tune"),
        ("InferenceService", "arrests-release"),
        ("ConfigMap", "mlpipe-run-config"),
        ("Deployment", SINK),
        ("Service", SINK),
    }
    # The Argo CD Application is applied on its own, to Argo CD's namespace.
    assert "Application" not in {o["kind"] for o in rendered}
    for obj in rendered:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "mlpipe", obj["metadata"]["name"]


# --- Schemas -----------------------------------------------------------------------------------


def test_every_object_fits_its_schema(rendered):
    for obj in rendered:
        validate_object(obj)


def test_argocd_application_fits_its_schema():
    validate_object(yaml.safe_load(APPLICATION.read_text()))


def test_argocd_application_points_at_the_prod_overlay():
    spec = yaml.safe_load(APPLICATION.read_text())["spec"]
    assert spec["source"]["path"] == "manifests/overlays/prod"
    assert (ROOT / spec["source"]["path"] / "kustomization.yaml").exists()
    assert spec["destination"]["namespace"] == "mlpipe"


def _broken(obj: dict, path: str, value) -> dict:
    """A copy of obj with the field at a dotted path (list indexes as numbers) set to value."""
    broken = copy.deepcopy(obj)
    *parents, last = [int(part) if part.isdigit() else part for part in path.split(".")]
    node = broken
    for part in parents:
        node = node[part]
    node[last] = value
    return broken


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("ServiceAccount", "bogus", True),
        ("Role", "rules.0.verb", ["get"]),
        ("Namespace", "spec", {"bogus": 1}),
        ("RoleBinding", "roleRef", {"kind": "Role"}),  # apiGroup and name are required
        ("RayCluster", "spec.headGroupSpec.bogus", 1),
        ("RayCluster", "spec.enableInTreeAutoscaling", "yes"),
        ("RayCluster", "spec.workerGroupSpecs.0.maxReplicas", "two"),
        ("RayCluster", f"{HEAD}.bogus", 1),
        ("RayCluster", f"{HEAD}.resources.limits", 4),
        ("RayCluster", "metadata.bogus", 1),
        ("InferenceService", "spec.predictor.bogus", 1),
        ("InferenceService", "spec.predictor.minReplicas", "two"),
        ("InferenceService", f"{PREDICTOR}.bogus", 1),
        ("InferenceService", f"{PREDICTOR}.readinessProbe.httpGet.path", 5),
        ("InferenceService", f"{PREDICTOR}.name", None),
        ("InferenceService", "spec.canary", {"not": "a list"}),
        ("InferenceService", "spec.predictor.logger", {"mode": "all", "bogus": 1}),
        ("InferenceService", "spec.predictor.logger", {"mode": "all", "url": 5}),
        ("Deployment", f"{SINK_CONTAINER}.bogus", 1),
        ("Deployment", "spec.replicas", "one"),
        ("Service", "spec.ports.0.port", "eighty"),
    ],
)
def test_schema_checks_refuse_unknown_fields_and_wrong_types(kubectl, kind, path, value):
    obj = _base_object(kind)
    validate_object(obj)
    with pytest.raises(ManifestError):
        validate_object(_broken(obj, path, value))


@pytest.mark.parametrize(
    ("path", "value"),
    [("spec.bogus", 1), ("spec.source.repoURL", None), ("spec.syncPolicy.automated.prune", "y")],
)
def test_application_schema_refuses_unknown_fields_and_wrong_types(path, value):
    obj = yaml.safe_load(APPLICATION.read_text())
    with pytest.raises(ManifestError):
        validate_object(_broken(obj, path, value))


def test_a_kind_without_a_schema_fails():
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    with pytest.raises(ManifestError, match="no schema"):
        validate_object(unknown)


def test_crd_schemas_make_unknown_fields_an_error_everywhere():
    """Every object level of the stored CRD schemas admits only its declared fields."""

    def open_objects(node, path=()):
        if not isinstance(node, dict):
            return []
        found = []
        if "properties" in node and "additionalProperties" not in node:
            if not node.get("x-kubernetes-preserve-unknown-fields"):
                found.append(".".join(path))
        for name, sub in (node.get("properties") or {}).items():
            found += open_objects(sub, (*path, name))
        for key in ("items", "additionalProperties"):
            found += open_objects(node.get(key), (*path, key))
        for key in ("anyOf", "allOf", "oneOf"):
            for sub in node.get(key) or []:
                found += open_objects(sub, (*path, key))
        return found

    for key in CRD_SCHEMAS:
        schema = crd_validator(*key).schema
        assert schema["additionalProperties"] is False
        assert open_objects(schema) == [], key


# --- Policy ------------------------------------------------------------------------------------


def test_every_object_follows_the_policy(rendered):
    for obj in rendered:
        check_policy(obj)


def test_every_workload_container_is_found(rendered):
    """The policy sees the Ray head, the Ray worker, the autoscaler, the predictor and the
    prediction sink."""
    seen = [where for obj in rendered for where, _ in containers_of(obj)]
    assert len(seen) == 5, seen


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("RayCluster", f"{HEAD}.securityContext.runAsNonRoot", False),
        ("RayCluster", f"{WORKER}.securityContext.allowPrivilegeEscalation", True),
        ("RayCluster", "spec.autoscalerOptions.securityContext.capabilities.drop", ["NET_RAW"]),
        ("RayCluster", "spec.autoscalerOptions.resources", {"requests": {"cpu": "1"}}),
        ("RayCluster", f"{WORKER}.image", "rayproject/ray:latest"),
        ("InferenceService", f"{PREDICTOR}.securityContext.runAsNonRoot", False),
        ("InferenceService", f"{PREDICTOR}.securityContext.seccompProfile.type", "Unconfined"),
        ("InferenceService", f"{PREDICTOR}.resources.limits", {"cpu": "1"}),
        ("InferenceService", f"{PREDICTOR}.image", "ghcr.io/kfp-mlpipe/mlpipe-serving"),
        ("Role", "rules.0.verbs", ["create", "get", "list", "watch", "patch", "delete"]),
        ("Role", "rules.1.resourceNames", ["mlpipe-object-store", "other"]),
        ("Role", "rules.0.resources", ["*"]),
        ("RoleBinding", "roleRef.kind", "ClusterRole"),
        ("Deployment", f"{SINK_CONTAINER}.securityContext.runAsNonRoot", False),
        ("Deployment", f"{SINK_CONTAINER}.securityContext.capabilities.drop", []),
        ("Deployment", f"{SINK_CONTAINER}.resources.requests", {"cpu": "1"}),
        ("Deployment", f"{SINK_CONTAINER}.image", "ghcr.io/kfp-mlpipe/mlpipe-serving:latest"),
    ],
)
def test_policy_refuses_broken_copies(kubectl, kind, path, value):
    obj = _base_object(kind)
    check_policy(obj)
    with pytest.raises(ManifestError):
        check_policy(_broken(obj, path, value))


def test_policy_refuses_secret_data_and_cluster_roles():
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mlpipe-object-store"}}
    check_policy(secret)  # a Secret with no data (a placeholder) is allowed
    for field in ("data", "stringData"):
        with pytest.raises(ManifestError, match="no data"):
            check_policy({**secret, field: {"AWS_SECRET_ACCESS_KEY": "c2VjcmV0"}})
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        cluster_wide = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind}
        with pytest.raises(ManifestError, match="cluster-wide"):
            check_policy({**cluster_wide, "metadata": {"name": "mlpipe"}})


def test_credentials_are_secret_references_only(rendered):
    """No Secret object with data anywhere, and every credential comes by reference to the
    object-store Secret (the serving account lists it for KServe's storage initializer)."""
    assert not [o for o in rendered if o["kind"] == "Secret" and ("data" in o or "stringData" in o)]
    ray = _one(rendered, "RayCluster")
    for where, container in containers_of(ray):
        if where.endswith("autoscalerOptions"):
            continue
        refs = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e]
        assert {r["name"] for r in refs} == {"mlpipe-object-store"}, where
        plain = {e["name"]: e.get("value", "") for e in container["env"] if "value" in e}
        assert not any("SECRET" in name or "KEY" in name for name in plain), plain
    serving = _one(rendered, "ServiceAccount", "mlpipe-serving")
    assert serving["secrets"] == [{"name": "mlpipe-object-store"}]
    isvc = _one(rendered, "InferenceService")
    assert isvc["spec"]["predictor"]["serviceAccountName"] == "mlpipe-serving"
    # The model server's admin token: from its own Secret, optional (no Secret: admin routes off).
    env = isvc["spec"]["predictor"]["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
    assert refs == {
        "MLPIPE_ADMIN_TOKEN": {"name": "mlpipe-admin-token", "key": "token", "optional": True}
    }
    assert not [e for e in env if "TOKEN" in e["name"] and "value" in e]


# --- Values that must agree with the code ----------------------------------------------------


def test_image_names_and_tags_are_the_package_version():
    assert IMAGE_TAG == VERSION
    assert COMPONENT_IMAGE == f"ghcr.io/kfp-mlpipe/mlpipe:{VERSION}"
    assert SERVING_IMAGE == f"ghcr.io/kfp-mlpipe/mlpipe-serving:{VERSION}"


@pytest.mark.parametrize("folder", RENDERED, ids=IDS)
def test_kustomize_image_tags_are_the_package_version(folder):
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    ours = [i for i in spec.get("images") or [] if i["name"].startswith("ghcr.io/kfp-mlpipe/")]
    if folder != BASE:
        assert ours, f"{folder}: the overlay sets our image tags with `images:`"
    for image in ours:
        assert image.get("newTag") == VERSION, image


def test_inference_service_runs_the_serving_image(rendered):
    isvc = _one(rendered, "InferenceService", "arrests-release")
    predictor = isvc["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"] == SERVING_IMAGE
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env["STORAGE_URI"] == "s3://mlpipe-models/arrests-release/v1"


def test_inference_service_args_are_the_servers(rendered):
    """The predictor's arguments parse with the server's own parser, and bind 0.0.0.0:8080."""
    from serving.cli import build_parser

    (container,) = _one(rendered, "InferenceService")["spec"]["predictor"]["containers"]
    args = build_parser().parse_args(container["args"])
    assert (args.model_dir, args.http_port, args.host) == ("/mnt/models", 8080, "0.0.0.0")
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    for probe, path in (
        ("readinessProbe", "/v2/health/ready"),
        ("livenessProbe", "/v2/health/live"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": 8080}, probe
        assert "tcpSocket" not in container[probe] and "exec" not in container[probe]


def test_canary_only_in_prod(rendered):
    isvc = _one(rendered, "InferenceService")
    predictor = isvc["spec"]["predictor"]
    if isvc["metadata"]["labels"].get("mlpipe.io/environment") == "prod":
        assert 0 < predictor["canaryTrafficPercent"] < 100
    else:
        assert "canaryTrafficPercent" not in predictor


def test_ray_cluster_is_the_projects_ray(rendered):
    ray_version = _pinned("ray")
    cluster = _one(rendered, "RayCluster", "mlpipe-tune")
    spec = cluster["spec"]
    assert spec["rayVersion"] == ray_version
    assert spec["enableInTreeAutoscaling"] is True
    # The trials import our code: the Ray pods run the project's image, with its Ray.
    for where, container in containers_of(cluster):
        if "image" in container:
            assert container["image"] == COMPONENT_IMAGE, where
    (workers,) = spec["workerGroupSpecs"]
    assert 0 <= workers["minReplicas"] <= workers["replicas"] <= workers["maxReplicas"]
    assert workers["maxReplicas"] >= 1


def test_overlays_size_dev_small_and_prod_large(kubectl):
    def sizes(folder):
        objects = list(_render(folder))
        workers = _one(objects, "RayCluster")["spec"]["workerGroupSpecs"][0]
        predictor = _one(objects, "InferenceService")["spec"]["predictor"]
        return workers["minReplicas"], workers["maxReplicas"], predictor["maxReplicas"]

    dev, prod = sizes(MANIFESTS / "overlays/dev"), sizes(MANIFESTS / "overlays/prod")
    assert dev[:2] == (0, 1)
    assert prod[0] >= 1 and prod[1] > dev[1] and prod[2] > dev[2]


def test_run_config_map_is_a_valid_run_config(rendered, tmp_path):
    """The ConfigMap's run config passes the same checks as `mlpipe run` (but the data's, which
    lives in object storage)."""
    from pipelines.config import check_config, load_config

    config_map = _one(rendered, "ConfigMap", "mlpipe-run-config")
    [(name, text)] = config_map["data"].items()
    path = tmp_path / name
    path.write_text(text)
    config = load_config(path)
    check_config(config, path, check_data=False)
    assert config.data.source.startswith("s3://")
    assert config.model_store == "s3://mlpipe-models"
    isvc = _one(rendered, "InferenceService")
    container = isvc["spec"]["predictor"]["containers"][0]
    storage = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert storage["STORAGE_URI"].startswith(f"{config.model_store}/{config.model_name}/v")
    assert isvc["metadata"]["name"] == config.model_name


# --- The prediction sink and KServe's payload logger ------------------------------------------


def test_prediction_sink_runs_the_sink_from_the_serving_image(rendered):
    """The sink's arguments parse with its own parser and bind 0.0.0.0 on the container's
    port; its probes ask its health route over HTTP; one replica (both halves of a pair must
    reach the same pod)."""
    from serving.cloudevents_sink import build_parser

    deployment = _one(rendered, "Deployment", SINK)
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["image"] == SERVING_IMAGE
    assert container["command"] == ["python", "-m", "serving.cloudevents_sink"]
    args = build_parser().parse_args(container["args"])
    assert args.host == "0.0.0.0"
    assert container["ports"] == [{"name": "http", "containerPort": args.port, "protocol": "TCP"}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": args.port}, probe


def test_prediction_sink_credentials_are_secret_references(rendered):
    (container,) = _one(rendered, "Deployment", SINK)["spec"]["template"]["spec"]["containers"]
    refs = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e]
    assert {r["name"] for r in refs} == {"mlpipe-object-store"}
    assert {r["key"] for r in refs} >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    plain = {e["name"] for e in container["env"] if "value" in e}
    assert plain == {"MLPIPE_PREDICTION_LOG"}


def test_prediction_sink_writes_the_run_configs_prediction_log(rendered, tmp_path):
    """The sink writes where the monitor reads: the run config's serving.prediction_log."""
    from pipelines.config import load_config

    config_map = _one(rendered, "ConfigMap", "mlpipe-run-config")
    [(name, text)] = config_map["data"].items()
    (tmp_path / name).write_text(text)
    config = load_config(tmp_path / name)
    (container,) = _one(rendered, "Deployment", SINK)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLPIPE_PREDICTION_LOG"] == config.prediction_log_uri
    assert config.prediction_log_uri.startswith("s3://")


def test_payload_logger_only_in_prod_and_it_reaches_the_sink(rendered):
    isvc = _one(rendered, "InferenceService")
    logger = isvc["spec"]["predictor"].get("logger")
    if isvc["metadata"]["labels"].get("mlpipe.io/environment") == "prod":
        assert logger == {"mode": "all", "url": f"http://{SINK}.mlpipe.svc.cluster.local"}
    else:
        assert logger is None
    check_logger_target(isvc, rendered)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda isvc, objs: _logger(isvc).update(url="http://other.mlpipe.svc.cluster.local"),
            "no Service other",
        ),
        (
            lambda isvc, objs: _logger(isvc).update(url=f"http://{SINK}.default.svc.cluster.local"),
            "in namespace default",
        ),
        (
            lambda isvc, objs: _logger(isvc).update(url=f"http://{SINK}.mlpipe.svc:8080"),
            "no port 8080",
        ),
        (
            lambda isvc, objs: _logger(isvc).update(url="http://sink.example.com"),
            "cluster DNS name",
        ),
        (
            lambda isvc, objs: _service(objs)["spec"]["ports"][0].update(targetPort="metrics"),
            "targetPort metrics",
        ),
        (
            lambda isvc, objs: _service(objs)["spec"].update(selector={"app": "nothing"}),
            "selects no Deployment",
        ),
    ],
)
def test_logger_target_check_refuses_broken_copies(kubectl, change, message):
    objects = copy.deepcopy(list(_render(MANIFESTS / "overlays/prod")))
    isvc = _one(objects, "InferenceService")
    check_logger_target(isvc, objects)
    change(isvc, objects)
    with pytest.raises(ManifestError, match=message):
        check_logger_target(isvc, objects)


def _logger(isvc: dict) -> dict:
    return isvc["spec"]["predictor"]["logger"]


def _service(objects: list[dict]) -> dict:
    return _one(objects, "Service", SINK)
