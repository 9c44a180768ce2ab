"""Submit the compiled pipeline to a Kubeflow Pipelines API server with the Python SDK.

    python -m pipelines.submit --config configs/arrests.yaml --host https://kfp.example.com

is the same as `mlpipe submit`. The run's parameters come from the run config, with paths passed
as written: on a cluster they must be URIs that the pipeline's pods can read.
"""

import os
import sys
import tempfile
from pathlib import Path

import requests

from components.common.errors import PipelineInputError
from pipelines.config import RunConfig, pipeline_arguments
from pipelines.training_pipeline import compile_pipeline

HEALTH_ROUTE = "/apis/v2beta1/healthz"
TOKEN_ENV = "KFP_TOKEN"


def check_host(host: str, timeout: float) -> None:
    """Fail fast, with one line, when nothing answers at `host` (kfp.Client itself retries long)."""
    url = host.rstrip("/") + HEALTH_ROUTE
    try:
        requests.get(url, timeout=timeout)
    except requests.RequestException as error:
        reason = type(error).__name__
        raise PipelineInputError(
            f"Kubeflow Pipelines host '{host}' does not answer ({reason} within {timeout:g} s)"
        ) from None


def submit_run(
    config: RunConfig,
    host: str,
    experiment: str = "mlpipe",
    run_name: str | None = None,
    namespace: str | None = None,
    service_account: str | None = None,
    enable_caching: bool = False,
    wait: bool = False,
    timeout: float = 10.0,
    run_timeout: float = 3600.0,
) -> str:
    """Compile, then create a run of the pipeline on `host`; return the run's id.

    The bearer token, if the server needs one, comes from the KFP_TOKEN environment variable.

    Raises:
        PipelineInputError: the host does not answer, or (with wait) the run did not succeed.
    """
    import kfp

    check_host(host, timeout)
    client = kfp.Client(host=host, existing_token=os.environ.get(TOKEN_ENV), namespace=namespace)
    with tempfile.TemporaryDirectory(prefix="mlpipe-submit-") as scratch:
        package = compile_pipeline(Path(scratch) / "training_pipeline.yaml")
        result = client.create_run_from_pipeline_package(
            str(package),
            arguments=pipeline_arguments(config, resolve_paths=False),
            run_name=run_name or f"{config.model_name}-training",
            experiment_name=experiment,
            namespace=namespace,
            enable_caching=enable_caching,
            service_account=service_account,
        )
    if wait:
        run = client.wait_for_run_completion(result.run_id, timeout=run_timeout)
        state = str(getattr(run, "state", "UNKNOWN"))
        if state != "SUCCEEDED":
            raise PipelineInputError(f"run {result.run_id} ended in state {state}")
    return result.run_id


if __name__ == "__main__":
    from pipelines.cli import main

    sys.exit(main(["submit", *sys.argv[1:]]))
