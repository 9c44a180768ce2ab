"""What can be checked of the image and the manifests without Docker or a cluster."""

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from components.common.image import COMPONENT_IMAGE, IMAGE_TAG

ROOT = Path(__file__).parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def test_image_tag_is_the_package_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert IMAGE_TAG == version
    assert COMPONENT_IMAGE.endswith(f":{version}")


def test_dockerfile_is_pinned_multi_stage_and_non_root():
    text = DOCKERFILE.read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert len(bases) >= 2, "build and runtime stages"
    for base in bases:
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", base), base
        assert not base.endswith(":latest")
    user = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert user and user[-1] not in ("root", "0")
    assert "-c constraints.txt" in text, "dependencies come from the lock"
    assert "pip install -U" not in text and "--upgrade" not in text
    # The build context copies only what the package needs.
    copied = re.findall(r"^COPY\s+(?!--from)(.+?)\s+\S+$", text, flags=re.MULTILINE)
    sources = {s for line in copied for s in line.split()}
    assert sources <= {"pyproject.toml", "constraints.txt", "README.md", "components", "pipelines"}


def _kustomizations():
    return sorted((ROOT / "manifests").glob("**/kustomization.yaml"))


@pytest.mark.parametrize("kustomization", _kustomizations(), ids=lambda p: str(p.parent.name))
def test_kustomizations_name_files_that_exist_and_parse(kustomization):
    spec = yaml.safe_load(kustomization.read_text())
    for resource in spec.get("resources", []):
        path = kustomization.parent / resource
        assert path.exists(), f"{kustomization}: resource {resource} is missing"
        if path.is_file():
            for document in yaml.safe_load_all(path.read_text()):
                assert {"apiVersion", "kind", "metadata"} <= set(document)
                assert document["metadata"].get("name")


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed"
)
@pytest.mark.parametrize("kustomization", _kustomizations(), ids=lambda p: str(p.parent.name))
def test_kustomizations_render(kustomization):
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(kustomization.parent)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    kinds = {doc["kind"] for doc in yaml.safe_load_all(rendered)}
    assert {"Namespace", "ServiceAccount"} <= kinds
