"""The pipeline as Kubeflow Pipelines' Kubernetes-native resources: a `Pipeline` and a
`PipelineVersion` (`pipelines.kubeflow.org/v2beta1`).

In Kubernetes native API mode, KFP keeps pipelines as custom resources instead of rows in its
database, so the pipeline is applied with `kubectl apply -k` or synced by Argo CD / Flux like any
other manifest:

    mlpipe pipeline-resources --output manifests/base/pipeline/pipeline.yaml

KFP's admission webhook refuses changes to a PipelineVersion's spec, so a changed pipeline must be
a new PipelineVersion. The version name is therefore the package version and a short sha256 of the
spec's content (`v0.1.0-1a2b3c4d5e6f`): the same spec gives the same name and the same file, a
changed spec a new version. `pipelines.submit` names the versions it uploads the same way.

The shape follows KFP's CRDs (`manifests/kustomize/base/crds/pipelines.kubeflow.org_*.yaml`) and
the Go types in `backend/src/crd/kubernetes/v2beta1/`: `spec.pipelineName` names the Pipeline
(the webhook then adds the owner reference and the pipeline-id label), `spec.pipelineSpec` holds
the compiled IR's first YAML document as an object, and `spec.platformSpec` the Kubernetes
platform spec when the compiled file has one.
"""

import hashlib
import json
import os
import re
import tempfile
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path

import yaml

from components.common.errors import PipelineInputError
from components.common.io import write_text
from pipelines.training_pipeline import PIPELINE_NAME, compile_pipeline

API_VERSION = "pipelines.kubeflow.org/v2beta1"
DEFAULT_NAMESPACE = "mlpipe"
PACKAGE = "kfp-mlpipe"
DIGEST_CHARS = 12
PART_OF = {"app.kubernetes.io/part-of": "mlpipe"}

# Kubernetes object names: a DNS-1123 subdomain (names) and a DNS-1123 label (namespaces).
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# libyaml when it is there: a compiled spec is large, and the pure-Python loader slow.
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_spec(path: str | os.PathLike) -> tuple[dict, dict | None]:
    """The compiled file's pipeline spec and its platform spec (None when it has none).

    As the kfp client reads a package: the first YAML document is the pipeline spec, any further
    documents together make the platform spec.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        documents = [doc for doc in yaml.load_all(text, Loader=FAST_LOADER) if doc]
    except FileNotFoundError:
        raise PipelineInputError(f"{path}: no such compiled pipeline file") from None
    except yaml.YAMLError:
        raise PipelineInputError(f"{path}: not valid YAML") from None
    if not documents or not isinstance(documents[0], dict) or "root" not in documents[0]:
        raise PipelineInputError(f"{path}: not a compiled KFP pipeline spec (no 'root')")
    platform: dict = {}
    for document in documents[1:]:
        platform.update(document)
    return documents[0], platform or None


def spec_digest(pipeline_spec: dict, platform_spec: dict | None = None) -> str:
    """sha256 of the spec's content (canonical JSON), so YAML formatting does not change it."""
    canonical = json.dumps(
        [pipeline_spec, platform_spec or {}], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def package_version() -> str:
    try:
        return installed_version(PACKAGE)
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0"


def version_name(pipeline_spec: dict, platform_spec: dict | None = None) -> str:
    """`v<package version>-<12 hex digits of the spec's sha256>`, a valid Kubernetes name part."""
    release = re.sub(r"[^a-z0-9.-]+", "-", package_version().lower()).strip(".-") or "0"
    return f"v{release}-{spec_digest(pipeline_spec, platform_spec)[:DIGEST_CHARS]}"


def _check_name(value: str, what: str, pattern: re.Pattern = _SUBDOMAIN, limit: int = 253):
    if len(value) > limit or not pattern.match(value):
        raise PipelineInputError(
            f"{what} '{value}' is not a valid Kubernetes name (lowercase letters, digits, '-'"
            f"{', .' if pattern is _SUBDOMAIN else ''}; at most {limit} characters)"
        )


def pipeline_resources(
    compiled_yaml_path: str | os.PathLike,
    name: str = PIPELINE_NAME,
    version: str | None = None,
    namespace: str = DEFAULT_NAMESPACE,
) -> list[dict]:
    """A `Pipeline` and a `PipelineVersion` that carries the compiled spec.

    Args:
        compiled_yaml_path: the compiled pipeline (`mlpipe compile`).
        name: the Pipeline's name.
        version: the version name; None derives it from the package version and the spec.
        namespace: where KFP's Kubernetes-native API looks for them (the KFP namespace, or a
            profile namespace on a multi-user install).

    Raises:
        PipelineInputError: the file is not a compiled spec, or a name is not a Kubernetes name.
    """
    pipeline_spec, platform_spec = read_spec(compiled_yaml_path)
    version = version or version_name(pipeline_spec, platform_spec)
    _check_name(name, "pipeline name")
    _check_name(version, "pipeline version name")
    _check_name(f"{name}-{version}", "PipelineVersion name")
    _check_name(namespace, "namespace", _LABEL, 63)
    description = pipeline_spec.get("pipelineInfo", {}).get("description", "")
    digest = spec_digest(pipeline_spec, platform_spec)

    pipeline = {
        "apiVersion": API_VERSION,
        "kind": "Pipeline",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(PART_OF)},
        "spec": {"description": description},
    }
    version_spec = {
        "pipelineName": name,
        "displayName": version,
        "description": f"{PACKAGE} {package_version()}, pipeline spec sha256 {digest}",
        "pipelineSpec": pipeline_spec,
    }
    if platform_spec:
        version_spec["platformSpec"] = platform_spec
    pipeline_version = {
        "apiVersion": API_VERSION,
        "kind": "PipelineVersion",
        # The name KFP's own API server gives a version it stores as a resource.
        "metadata": {"name": f"{name}-{version}", "namespace": namespace, "labels": dict(PART_OF)},
        "spec": version_spec,
    }
    return [pipeline, pipeline_version]


def write_pipeline_resources(
    output: str | os.PathLike,
    name: str = PIPELINE_NAME,
    namespace: str = DEFAULT_NAMESPACE,
    resources=None,
) -> list[dict]:
    """Compile the pipeline (its pods given `resources`, the run config's section; None: the
    defaults) and write its resources as one multi-document YAML file, atomically."""
    output = Path(output)
    with tempfile.TemporaryDirectory(prefix="mlpipe-resources-") as scratch:
        compiled = compile_pipeline(Path(scratch) / "training_pipeline.yaml", resources=resources)
        resources = pipeline_resources(compiled, name=name, namespace=namespace)
    header = (
        "# Generated by `mlpipe pipeline-resources` from pipelines/training_pipeline.py: "
        "regenerate it, do not edit it.\n"
        "# KFP's Kubernetes-native API (pipelines.kubeflow.org/v2beta1); a changed pipeline "
        "spec gets a new PipelineVersion name.\n"
    )
    text = header + yaml.safe_dump_all(resources, sort_keys=False, explicit_start=True, width=100)
    write_text(output, text)
    return resources
