"""The pipeline as KFP Kubernetes-native resources: their shape, their names, the embedded spec,
and their fit to the published CRD schemas (tests/data/kfp-crds/)."""

import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from components.common.errors import PipelineInputError
from pipelines import kfp_resources
from pipelines.kfp_resources import API_VERSION, pipeline_resources, read_spec
from pipelines.training_pipeline import compile_pipeline

MLPIPE = str(Path(sys.executable).with_name("mlpipe"))
CRDS = Path(__file__).parents[1] / "data" / "kfp-crds"
SCHEMAS = {
    "Pipeline": CRDS / "pipelines.kubeflow.org_pipelines.v2beta1.schema.yaml",
    "PipelineVersion": CRDS / "pipelines.kubeflow.org_pipelineversions.v2beta1.schema.yaml",
}
SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    return compile_pipeline(tmp_path_factory.mktemp("compiled") / "training_pipeline.yaml")


@pytest.fixture(scope="module")
def resources(compiled) -> list[dict]:
    return pipeline_resources(compiled)


def _documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _changed_copy(compiled: Path, target: Path, change) -> Path:
    documents = _documents(compiled)
    change(documents[0])
    target.write_text(yaml.safe_dump_all(documents, sort_keys=False, width=70))
    return target


def test_a_pipeline_and_its_version_with_the_right_kinds_and_names(resources):
    pipeline, version = resources
    assert (pipeline["apiVersion"], pipeline["kind"]) == (API_VERSION, "Pipeline")
    assert (version["apiVersion"], version["kind"]) == (API_VERSION, "PipelineVersion")
    assert API_VERSION == "pipelines.kubeflow.org/v2beta1"
    assert pipeline["metadata"]["name"] == "mlpipe-training"
    assert version["spec"]["pipelineName"] == pipeline["metadata"]["name"]
    name = version["spec"]["displayName"]
    assert re.fullmatch(r"v\d+\.\d+\.\d+[-.a-z0-9]*-[0-9a-f]{12}", name)
    assert version["metadata"]["name"] == f"mlpipe-training-{name}"
    for resource in resources:
        assert resource["metadata"]["namespace"] == "mlpipe"
        assert SUBDOMAIN.match(resource["metadata"]["name"])
        assert len(resource["metadata"]["name"]) <= 253


def test_the_version_embeds_exactly_the_compiled_spec(compiled, resources):
    documents = _documents(compiled)
    spec = resources[1]["spec"]
    assert spec["pipelineSpec"] == documents[0]
    platform = {k: v for d in documents[1:] for k, v in d.items()}
    assert spec.get("platformSpec") == (platform or None)


def test_the_version_name_follows_the_spec_content(compiled, tmp_path):
    name = pipeline_resources(compiled)[1]["spec"]["displayName"]
    assert pipeline_resources(compiled)[1]["spec"]["displayName"] == name

    # The same content written differently (key order, line width, no header): the same name.
    same = _changed_copy(compiled, tmp_path / "same.yaml", lambda spec: None)
    assert same.read_text() != compiled.read_text()
    assert pipeline_resources(same)[1]["spec"]["displayName"] == name

    def more_trials(spec):
        spec["root"]["inputDefinitions"]["parameters"]["tuning"]["defaultValue"]["num_trials"] = (
            99.0
        )

    changed = _changed_copy(compiled, tmp_path / "changed.yaml", more_trials)
    changed_name = pipeline_resources(changed)[1]["spec"]["displayName"]
    assert changed_name != name
    assert changed_name.rsplit("-", 1)[0] == name.rsplit("-", 1)[0]  # same package version


def test_an_explicit_version_and_namespace(compiled):
    pipeline, version = pipeline_resources(compiled, version="nightly", namespace="team-a")
    assert version["metadata"]["name"] == "mlpipe-training-nightly"
    assert {pipeline["metadata"]["namespace"], version["metadata"]["namespace"]} == {"team-a"}


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"name": "Mlpipe_Training"}, "pipeline name 'Mlpipe_Training'"),
        ({"version": "v1 final"}, "pipeline version name 'v1 final'"),
        ({"namespace": "team.a"}, "namespace 'team.a'"),
    ],
)
def test_a_name_kubernetes_refuses_is_one_line(compiled, options, fragment):
    with pytest.raises(PipelineInputError, match=re.escape(fragment)):
        pipeline_resources(compiled, **options)


def test_a_file_that_is_not_a_compiled_spec(tmp_path):
    (tmp_path / "x.yaml").write_text("a: 1\n")
    with pytest.raises(PipelineInputError, match="not a compiled KFP pipeline spec"):
        read_spec(tmp_path / "x.yaml")


def _undeclared(value, schema: dict, where: str) -> list[str]:
    """Fields the API server would prune: not declared where the schema keeps no unknown fields."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict) and "properties" in schema:
        found = []
        for key, item in value.items():
            if key not in schema["properties"]:
                found.append(f"{where}.{key}")
            else:
                found += _undeclared(item, schema["properties"][key], f"{where}.{key}")
        return found
    if isinstance(value, list) and "items" in schema:
        return [p for i, v in enumerate(value) for p in _undeclared(v, schema["items"], where)]
    return []


def test_the_resources_fit_the_published_crd_schemas(resources):
    for resource in resources:
        schema = yaml.safe_load(SCHEMAS[resource["kind"]].read_text())
        validator = jsonschema.Draft202012Validator(schema)
        validator.check_schema(schema)
        errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(resource)]
        assert errors == [], resource["kind"]
        assert _undeclared(resource, schema, resource["kind"]) == []
        metadata = resource["metadata"]
        assert LABEL.match(metadata["namespace"]) and len(metadata["namespace"]) <= 63


def test_the_schema_check_bites(resources):
    version = resources[1]
    schema = yaml.safe_load(SCHEMAS["PipelineVersion"].read_text())
    without_spec = {
        **version,
        "spec": {k: v for k, v in version["spec"].items() if k != "pipelineSpec"},
    }
    assert not jsonschema.Draft202012Validator(schema).is_valid(without_spec)
    misnamed = {**version, "spec": {**version["spec"], "pipelineRef": "x"}}
    assert _undeclared(misnamed, schema, "v") == ["v.spec.pipelineRef"]


def test_cli_writes_the_resources_as_one_multi_document_file(tmp_path, compiled):
    output = tmp_path / "manifests" / "base" / "pipeline" / "pipeline.yaml"
    result = subprocess.run(
        [MLPIPE, "pipeline-resources", "--output", str(output), "--namespace", "kubeflow"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    written = _documents(output)
    assert written == pipeline_resources(compiled, namespace="kubeflow")
    assert output.read_text().startswith("# Generated by `mlpipe pipeline-resources`")
    assert sorted(p.name for p in output.parent.iterdir()) == ["pipeline.yaml"]  # no temp file
    assert "PipelineVersion mlpipe-training-v" in result.stdout


def test_a_failed_write_leaves_the_previous_file(tmp_path, monkeypatch):
    output = tmp_path / "pipeline.yaml"
    output.write_text("previous\n")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(kfp_resources.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        kfp_resources.write_pipeline_resources(output)
    assert output.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["pipeline.yaml"]
