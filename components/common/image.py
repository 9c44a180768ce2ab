"""The container image that every component runs in on a cluster (built from docker/Dockerfile).

The tag is the package version, so the compiled pipeline, the image and the manifests move together.
"""

from importlib.metadata import version

IMAGE_REPOSITORY = "ghcr.io/kfp-mlpipe/mlpipe"
IMAGE_TAG = version("kfp-mlpipe")

COMPONENT_IMAGE = f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"
# The KServe predictor image (docker/serving.Dockerfile): the same code, the model server as entry.
SERVING_IMAGE = f"{IMAGE_REPOSITORY}-serving:{IMAGE_TAG}"
