"""What is in the two built images: the project and its locked dependencies (pip check clean,
the lock's versions), the image's own user (not root), and the image's size, reported."""

import json
from importlib.metadata import version

import pytest

from tests.containers.conftest import size_of
from tests.containers.engine import ROOT, container, podman, podman_run

pytestmark = pytest.mark.container

# The component image is about 1.5 GB (ray, scikit-learn, kserve, kfp, onnxruntime): a budget
# that catches a build tool or a cache left in it, not a small drift.
SIZE_BUDGET = 2.0e9
IMPORTS = "import components, pipelines, serving, ray, sklearn, kserve, kfp, onnxruntime"


def lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, sep, pinned = line.partition("==")
        if sep:
            pins[name.lower().replace("_", "-")] = pinned
    return pins


@pytest.mark.parametrize("which", ["component_image", "serving_image"])
def test_image_is_the_locked_project_as_a_non_root_user(which, request):
    image = request.getfixturevalue(which)
    script = f"id -u && python -m pip check && python -c '{IMPORTS}' && pip list --format json"
    with container("--network=none", "--entrypoint=sh", image, "-c", script) as container_id:
        code = podman("wait", container_id).strip()
        out = podman_run("logs", container_id)
    assert code == "0", out.stdout + out.stderr
    uid, checked, listed = out.stdout.split("\n", 2)
    assert uid.strip() != "0"
    assert checked.strip() == "No broken requirements found."
    installed = {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(listed)}
    assert installed["kfp-mlpipe"] == version("kfp-mlpipe")
    pins = lock()
    assert installed["ray"] == pins["ray"] and installed["scikit-learn"] == pins["scikit-learn"]
    differ = {n: v for n, v in installed.items() if n in pins and pins[n] != v}
    assert not differ, f"not the lock's versions: {differ}"
    size = size_of(image)
    print(f"{image}: {size / 1e9:.2f} GB")
    assert size < SIZE_BUDGET, f"{image}: {size / 1e9:.2f} GB"
