# The serving image: the KServe predictor (the `serving` package) for a registered model.
# Build from the repository root, tagged with the package version in pyproject.toml:
#   docker build -f docker/serving.Dockerfile -t ghcr.io/kfp-mlpipe/mlpipe-serving:0.1.0 .
# components/common/image.py derives the same name (SERVING_IMAGE), and tests/packaging checks
# that the InferenceService in manifests/ uses that tag too.
#
# Base: python:3.11.7-slim-bookworm, pinned by the digest of its multi-platform manifest list as
# Docker's official repo-info records it (docker-library/repo-info,
# repos/python/remote/3.11.7-slim-bookworm.md, January 2024, read from a mirror of that
# repository; no registry could be reached to confirm it, and a wrong digest fails the build).
# The build stage is the component image's (docker/Dockerfile), line for line; a test keeps the
# two the same.

# BASE_IMAGE replaces it with another Python 3.11 Debian bookworm image that has `python` and
# its venv module (docker/build_images.py makes one with debootstrap where no registry can be
# reached: `make images`).
ARG BASE_IMAGE=python:3.11.7-slim-bookworm@sha256:628e414ed54d0c8e17b772d51406dba9216ccea024c6cc8c13d3dc3e9c776bde

FROM ${BASE_IMAGE} AS build
# VENV and WHEELS are only paths; tests/packaging runs the RUN lines below with its own values.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VENV=/opt/venv \
    WHEELS=/tmp/wheels
RUN python -m venv "$VENV"
WORKDIR /src
# pip's settings and CA certificates, where the package index needs them (a company mirror), come
# in as build secrets, mounted only while pip runs and never stored in a layer:
#   --secret id=pip.conf,src=PIP_CONF --secret id=pip-ca,src=CA_BUNDLE
# (docker/build_images.py passes this machine's own). Without them pip uses its defaults.
COPY pyproject.toml constraints.txt ./
# The project's dependencies first, pinned by the one lock: this layer stays in the build cache
# until pyproject.toml or constraints.txt changes, so a change to the code rebuilds only the rest.
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca,target=/run/secrets/pip-ca \
    "$VENV/bin/python" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > requirements.txt \
    && "$VENV/bin/python" -m pip install -c constraints.txt -r requirements.txt
COPY README.md ./
COPY components ./components
COPY pipelines ./pipelines
COPY serving ./serving
# The project as a wheel, then that wheel with every dependency pinned by the one lock.
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca,target=/run/secrets/pip-ca \
    "$VENV/bin/python" -m pip wheel --no-deps --wheel-dir "$WHEELS" . \
    && "$VENV/bin/python" -m pip install -c constraints.txt "$WHEELS"/kfp_mlpipe-*.whl

FROM ${BASE_IMAGE}
RUN groupadd --gid 10001 mlpipe \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin mlpipe
# Only the virtualenv: no wheels, no pip cache, no build tools.
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /home/mlpipe
EXPOSE 8080
# KServe's storage initializer puts the model version in /mnt/models. Inside a container the
# server must take traffic from the pod network, so the default here is --host 0.0.0.0 (run
# locally, `mlpipe serve` and the server keep 127.0.0.1).
ENTRYPOINT ["python", "-m", "serving"]
CMD ["--model_dir", "/mnt/models", "--http_port", "8080", "--host", "0.0.0.0"]
