"""Static checks of rendered Kubernetes objects: schema validation and the project's policy.

Each check takes one object (a dict, as `kubectl kustomize` renders it) and raises
`ManifestError` naming the object and the field; the tests call them on the rendered manifests
and on deliberately broken copies.

Schemas, by kind:
- core Kubernetes kinds: the API's own OpenAPI schemas for `K8S_VERSION`, as kubernetes-validate
  ships them, in strict mode (an unknown field fails);
- InferenceService: the KServe SDK's generated model classes (every field must be one the class
  declares, with the declared type; the classes' own client-side validation runs too), and each
  predictor container also against the core `Container` schema;
- RayCluster and Argo CD Application: the CRDs' openAPIV3Schema (tests/data/crds, see its
  README; `CRD_SCHEMAS` lists them), made strict the way the API server's strict field validation is: an object with
  declared properties admits no other field, unless it preserves unknown fields.
"""

import copy
import json
from functools import cache
from importlib.resources import files
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import referencing
import yaml

ROOT = Path(__file__).parents[2]
TEST_DATA = ROOT / "tests" / "data"
# The Kubernetes version whose API schemas core objects are checked against.
K8S_VERSION = "1.32"
K8S_DEFINITIONS = "https://kubernetes.io/api/_definitions.json"

# (apiVersion, kind) -> a CRD's openAPIV3Schema (YAML), relative to tests/data. A kind that is in
# none of these tables and not a core kind fails validation: add its schema here.
CRD_SCHEMAS = {
    ("ray.io/v1", "RayCluster"): "crds/ray.io_rayclusters.v1.openapi.yaml",
    ("argoproj.io/v1alpha1", "Application"): "crds/argoproj.io_applications.v1alpha1.openapi.yaml",
    ("pipelines.kubeflow.org/v2beta1", "Pipeline"): (
        "kfp-crds/pipelines.kubeflow.org_pipelines.v2beta1.schema.yaml"
    ),
    ("pipelines.kubeflow.org/v2beta1", "PipelineVersion"): (
        "kfp-crds/pipelines.kubeflow.org_pipelineversions.v2beta1.schema.yaml"
    ),
}
KSERVE_KINDS = {("serving.kserve.io/v1beta1", "InferenceService")}

REQUIRED_RESOURCES = ("cpu", "memory")
# The only rules the pipeline's Role may have: InferenceServices in its own namespace, and the
# object-store Secret by name.
PIPELINE_ROLE_RULES = [
    {
        "apiGroups": ["serving.kserve.io"],
        "resources": ["inferenceservices"],
        "verbs": ["create", "get", "list", "watch", "patch"],
    },
    {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": ["mlpipe-object-store"],
        "verbs": ["get"],
    },
]


class ManifestError(AssertionError):
    """An object that fails a schema or a policy; the message names the object and field."""


def describe(obj: dict) -> str:
    metadata = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{metadata.get('name')}"


def _where(path) -> str:
    return ".".join(str(part) for part in path) or "(top level)"


# --- Schema validation -----------------------------------------------------------------------


@cache
def _k8s_definitions() -> dict:
    """kubernetes-validate's strict definitions for K8S_VERSION (core types, by full name)."""
    folder = files("kubernetes_validate") / "kubernetes-json-schema"
    return json.loads((folder / f"v{K8S_VERSION}.0-local-strict" / "_definitions.json").read_text())


@cache
def _registry() -> referencing.Registry:
    resource = referencing.Resource.from_contents(_k8s_definitions())
    return referencing.Registry().with_resource(K8S_DEFINITIONS, resource)


def strict_schema(schema: dict) -> dict:
    """A CRD structural schema as JSON Schema, with unknown fields rejected.

    The API server prunes or (with strict field validation, kubectl's default) rejects fields a
    structural schema does not declare; JSON Schema allows them unless told otherwise. So every
    object that declares `properties` gets `additionalProperties: false`, unless it has its own
    `additionalProperties` or `x-kubernetes-preserve-unknown-fields`. OpenAPI's `nullable`
    becomes a "null" type.
    """
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: strict_schema(sub) for name, sub in out["properties"].items()}
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = strict_schema(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = strict_schema(out["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [strict_schema(sub) for sub in out[key]]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    schema = yaml.safe_load((TEST_DATA / CRD_SCHEMAS[(api_version, kind)]).read_text())
    schema = strict_schema(schema)
    # The API server checks a custom resource's metadata as the core ObjectMeta.
    schema["properties"]["metadata"] = {
        "$ref": f"{K8S_DEFINITIONS}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    }
    return jsonschema.Draft202012Validator(schema, registry=_registry())


def _core_validator(type_name: str) -> jsonschema.Draft202012Validator:
    schema = {"$ref": f"{K8S_DEFINITIONS}#/$defs/{type_name}"}
    return jsonschema.Draft202012Validator(schema, registry=_registry())


def _raise_first(validator: jsonschema.Draft202012Validator, instance, label: str) -> None:
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        raise ManifestError(f"{label}: {_where(error.absolute_path)}: {error.message}")


# The KServe SDK's classes name their field types as strings: a class name, 'list[T]',
# 'dict(str, T)', or one of these.
_PRIMITIVES = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "datetime": (str,),
    "date": (str,),
    "ResourceQuantity": (str, int, float),
}


def _sdk_class(name: str):
    import kserve
    from kubernetes import client

    found = getattr(kserve.models, name, None) or getattr(client.models, name, None)
    if found is None:
        raise ManifestError(f"the SDKs have no model class {name}")
    return found


def sdk_object(data, type_name: str, path: tuple = ()):
    """Build the SDK object for `data`, refusing unknown fields and wrong types.

    The classes' generated deserializer skips fields it does not know, so this walks
    `attribute_map` and `openapi_types` itself, then constructs each object, which runs the
    classes' client-side validation (required fields, enums).
    """
    if type_name == "object":
        return data
    if type_name.startswith("list["):
        if not isinstance(data, list):
            raise ManifestError(f"{_where(path)}: expected a list, got {type(data).__name__}")
        inner = type_name[5:-1]
        return [sdk_object(item, inner, (*path, index)) for index, item in enumerate(data)]
    if type_name.startswith("dict("):
        if not isinstance(data, dict):
            raise ManifestError(f"{_where(path)}: expected a mapping, got {type(data).__name__}")
        inner = type_name[5:-1].split(", ", 1)[1]
        return {key: sdk_object(value, inner, (*path, key)) for key, value in data.items()}
    if type_name in _PRIMITIVES:
        wanted = _PRIMITIVES[type_name]
        if isinstance(data, bool) and bool not in wanted or not isinstance(data, wanted):
            raise ManifestError(
                f"{_where(path)}: expected {type_name}, got {type(data).__name__} {data!r}"
            )
        return data
    klass = _sdk_class(type_name)
    if not isinstance(data, dict):
        raise ManifestError(f"{_where(path)}: expected a {type_name} object, got {data!r}")
    by_json = {json_name: attr for attr, json_name in klass.attribute_map.items()}
    unknown = sorted(set(data) - set(by_json))
    if unknown:
        raise ManifestError(f"{_where((*path, unknown[0]))}: unknown field for {type_name}")
    kwargs = {
        by_json[key]: sdk_object(value, klass.openapi_types[by_json[key]], (*path, key))
        for key, value in data.items()
    }
    try:
        return klass(**kwargs)
    except (ValueError, TypeError) as error:
        raise ManifestError(f"{_where(path)}: {type_name}: {error}") from None


def validate_inference_service(obj: dict) -> None:
    label = describe(obj)
    try:
        sdk_object(obj, "V1beta1InferenceService")
    except ManifestError as error:
        raise ManifestError(f"{label}: {error}") from None
    containers = ((obj.get("spec") or {}).get("predictor") or {}).get("containers") or []
    for index, container in enumerate(containers):
        _raise_first(
            _core_validator("io.k8s.api.core.v1.Container"),
            container,
            f"{label}: spec.predictor.containers.{index}",
        )


def validate_object(obj: dict) -> None:
    """Validate one object against its kind's schema; raise ManifestError if it does not fit."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    label = describe(obj)
    if key in CRD_SCHEMAS:
        _raise_first(crd_validator(*key), obj, label)
    elif key in KSERVE_KINDS:
        validate_inference_service(obj)
    else:
        try:
            kubernetes_validate.validate(copy.deepcopy(obj), K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise ManifestError(
                f"{label}: {_where(error.absolute_path)}: {error.message}"
            ) from None
        except kubernetes_validate.SchemaNotFoundError:
            raise ManifestError(
                f"{label}: no schema for {key[0]} {key[1]}: add one to CRD_SCHEMAS "
                "(tests/packaging/manifest_checks.py)"
            ) from None


# --- Policy ------------------------------------------------------------------------------------


def containers_of(obj: dict) -> list[tuple[str, dict]]:
    """Every container an object will run, with where it is: any `containers`,
    `initContainers` or `ephemeralContainers` list at any depth, plus the autoscaler sidecar
    that KubeRay adds from `autoscalerOptions`."""
    found = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers", "ephemeralContainers") and isinstance(
                    value, list
                ):
                    for index, container in enumerate(value):
                        found.append((_where((*path, key, index)), container))
                else:
                    walk(value, (*path, key))
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, (*path, index))

    walk(obj, ())
    spec = obj.get("spec") or {}
    if obj.get("kind") == "RayCluster" and spec.get("enableInTreeAutoscaling"):
        found.append(("spec.autoscalerOptions", spec.get("autoscalerOptions") or {}))
    return found


def check_container(where: str, container: dict) -> None:
    context = container.get("securityContext") or {}
    if context.get("runAsNonRoot") is not True:
        raise ManifestError(f"{where}: securityContext.runAsNonRoot must be true")
    if context.get("allowPrivilegeEscalation") is not False:
        raise ManifestError(f"{where}: securityContext.allowPrivilegeEscalation must be false")
    if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
        raise ManifestError(f"{where}: securityContext.capabilities.drop must include ALL")
    if (context.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        raise ManifestError(f"{where}: securityContext.seccompProfile.type must be RuntimeDefault")
    if context.get("privileged"):
        raise ManifestError(f"{where}: securityContext.privileged must not be set")
    resources = container.get("resources") or {}
    for bound in ("requests", "limits"):
        missing = [name for name in REQUIRED_RESOURCES if name not in (resources.get(bound) or {})]
        if missing:
            raise ManifestError(f"{where}: resources.{bound} lacks {', '.join(missing)}")
    image = container.get("image")
    if image is not None:
        check_image(where, image)


def check_image(where: str, image: str) -> None:
    """An image is pinned: a tag other than `latest`, or a digest."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    if digest:
        return
    if not tag or tag == "latest":
        raise ManifestError(f"{where}: image {image} must have a fixed tag (not latest) or digest")


def check_policy(obj: dict) -> None:
    """The project's rules for every object; raise ManifestError on the first broken one."""
    label = describe(obj)
    kind = obj.get("kind")
    if kind in ("ClusterRole", "ClusterRoleBinding"):
        raise ManifestError(f"{label}: nothing cluster-wide: use a Role in the namespace")
    if kind == "Secret" and (obj.get("data") or obj.get("stringData")):
        raise ManifestError(f"{label}: a Secret in Git must carry no data; reference it instead")
    if kind == "Role":
        rules = obj.get("rules") or []
        if any("*" in values for rule in rules for values in rule.values()):
            raise ManifestError(f"{label}: no wildcard in a Role's rules")
        if obj["metadata"]["name"] == "mlpipe-pipeline" and _normalized(rules) != _normalized(
            PIPELINE_ROLE_RULES
        ):
            raise ManifestError(
                f"{label}: rules must be exactly {PIPELINE_ROLE_RULES}, got {rules}"
            )
    if kind == "RoleBinding" and (obj.get("roleRef") or {}).get("kind") != "Role":
        raise ManifestError(f"{label}: roleRef must be a Role in the namespace")
    for where, container in containers_of(obj):
        check_container(f"{label}: {where}", container)


def _normalized(rules: list[dict]) -> list:
    return sorted(
        json.dumps({key: sorted(value) for key, value in rule.items()}, sort_keys=True)
        for rule in rules
    )


# --- The payload logger's target ---------------------------------------------------------------


def _service_host(host: str) -> tuple[str, str] | None:
    """(name, namespace) of a Service's cluster DNS name, or None if it is not one."""
    parts = host.split(".")
    if len(parts) >= 3 and parts[2] == "svc" and parts[3:] in ([], ["cluster", "local"]):
        return parts[0], parts[1]
    return None


def _pod_port(container: dict, target) -> int | None:
    """The container port a Service's targetPort (a number or a port's name) reaches."""
    for port in container.get("ports") or []:
        if target in (port.get("containerPort"), port.get("name")):
            return port["containerPort"]
    return None


def check_logger_target(isvc: dict, objects: list[dict]) -> None:
    """An InferenceService's payload logger (spec.predictor.logger.url), if it has one, reaches
    a pod of these objects: the URL names a Service (<name>.<namespace>.svc[.cluster.local]) that
    is here, in that namespace, on one of its ports, and that Service's selector picks a
    Deployment's pods with a container listening on its targetPort."""
    label = describe(isvc)
    logger = ((isvc.get("spec") or {}).get("predictor") or {}).get("logger")
    if logger is None:
        return
    url = urlparse(str(logger.get("url", "")))
    where = f"{label}: spec.predictor.logger.url {logger.get('url')!r}"
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ManifestError(f"{where}: expected http(s)://<service>.<namespace>.svc...")
    named = _service_host(url.hostname)
    if named is None:
        raise ManifestError(f"{where}: not a Service's cluster DNS name")
    name, namespace = named
    services = [
        o
        for o in objects
        if o.get("kind") == "Service"
        and o["metadata"].get("name") == name
        and o["metadata"].get("namespace") == namespace
    ]
    if not services:
        raise ManifestError(f"{where}: no Service {name} in namespace {namespace}")
    spec = services[0].get("spec") or {}
    port = url.port or (443 if url.scheme == "https" else 80)
    ports = [p for p in spec.get("ports") or [] if p.get("port") == port]
    if not ports:
        raise ManifestError(f"{where}: Service {name} has no port {port}")
    target = ports[0].get("targetPort", port)
    selector = spec.get("selector") or {}
    for obj in objects:
        if obj.get("kind") != "Deployment" or obj["metadata"].get("namespace") != namespace:
            continue
        template = obj["spec"]["template"]
        labels = (template.get("metadata") or {}).get("labels") or {}
        if not selector or selector.items() - labels.items():
            continue
        for container in template["spec"]["containers"]:
            if _pod_port(container, target) is not None:
                return
    raise ManifestError(
        f"{where}: Service {name} selects no Deployment's pod listening on targetPort {target}"
    )
