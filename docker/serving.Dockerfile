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

FROM python:3.11.7-slim-bookworm@sha256:628e414ed54d0c8e17b772d51406dba9216ccea024c6cc8c13d3dc3e9c776bde AS build
# VENV and WHEELS are only paths; tests/packaging runs the RUN lines below with its own values.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VENV=/opt/venv \
    WHEELS=/tmp/wheels
RUN python -m venv "$VENV"
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY components ./components
COPY pipelines ./pipelines
COPY serving ./serving
# The project as a wheel, then that wheel with every dependency pinned by the one lock.
RUN "$VENV/bin/python" -m pip wheel --no-deps --wheel-dir "$WHEELS" . \
    && "$VENV/bin/python" -m pip install -c constraints.txt "$WHEELS"/kfp_mlpipe-*.whl

FROM python:3.11.7-slim-bookworm@sha256:628e414ed54d0c8e17b772d51406dba9216ccea024c6cc8c13d3dc3e9c776bde
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
