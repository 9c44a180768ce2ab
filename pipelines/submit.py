"""Submit the pipeline to a Kubeflow Pipelines API server with the Python SDK (kfp.Client).

A library module: the command line is

    mlpipe submit --config configs/arrests.yaml --host https://kfp.example.com

One submission:

1. compiles the pipeline;
2. creates the experiment, or reuses the one with that name;
3. uploads the spec as a version of the pipeline `mlpipe-training`, creating the pipeline with
   `upload_pipeline` the first time (its first version then has the pipeline's name, as KFP names
   it). Later versions are named like the Kubernetes resources (`pipelines.kfp_resources`): the
   package version and a short sha256 of the spec, `v0.1.0-1a2b3c4d5e6f`. A version of that name
   that is already there is the same spec, and is reused instead of uploaded again;
4. creates a run of that pipeline version, or with a cron schedule a recurring run of it, at most
   one run at a time and without catching up on missed runs;
5. with wait, follows the run and fails unless it SUCCEEDED.

The run's parameters come from the run config (`pipeline_arguments(config, resolve_paths=False)`),
with paths as written: on a cluster they must be URIs that the pipeline's pods can read.

Caching: a run of a stored pipeline version has no caching switch in the KFP API (kfp.Client's
`enable_caching` only rewrites a spec that is sent inline with the run, and is silently ignored
with a version), so the choice is made in the uploaded spec. Off (the default) turns caching off
in every task; on keeps the compile-time settings, in which ingest (a growing data lake) and
deploy never cache.

Faults of the moment (the API server answering 5xx or 429 while its pod restarts, a refused or
reset connection, a timeout) are retried with the backoff of `components.common.retry`; a 4xx
is the server's answer and fails at once. A call that creates something (an upload, a run, a
recurring run) is retried only when the request certainly was not acted on (a refused
connection, 503 or 429): after a timeout or a 500 the run may exist, and a retry would start a
second one. `check_host` stays the fail-fast gate before all of it: a host that does not answer
at all when the submission starts is a wrong --host (or a missing port-forward), reported at once
rather than after the retries.
"""

import contextlib
import io
import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import requests
import yaml

from components.common import retry
from components.common.errors import PipelineInputError
from pipelines.config import RunConfig, pipeline_arguments
from pipelines.kfp_resources import PACKAGE, package_version, read_spec, spec_digest, version_name
from pipelines.training_pipeline import PIPELINE_NAME, compile_pipeline

# What --pipeline names: training (pipelines/training_pipeline.py), monitoring
# (pipelines/monitoring_pipeline.py) or batch-prediction (pipelines/batch_prediction_pipeline.py;
# those two imported when submitted).
PIPELINES = ("training", "monitoring", "batch-prediction")

HEALTH_ROUTE = "/apis/v2beta1/healthz"
TOKEN_ENV = "KFP_TOKEN"
SUCCEEDED = "SUCCEEDED"
MAX_CONCURRENCY = 1
_CRON_DESCRIPTORS = {
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
}
_CRON_FIELD = re.compile(r"[0-9A-Za-z*?/,-]+")
_GO_DURATION = re.compile(r"@every (\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+")


class SubmitFailed(Exception):
    """The API server refused a call, or a followed run did not succeed (the CLI exits 1)."""


class RunFailed(SubmitFailed):
    """A followed run ended in a state other than SUCCEEDED, or did not end in time."""

    def __init__(self, run_id: str, state: str | None, message: str):
        super().__init__(message)
        self.run_id = run_id
        self.state = state


@dataclass(frozen=True)
class Submission:
    """What a submission created on the host."""

    host: str
    experiment_id: str
    pipeline_name: str
    pipeline_id: str
    version_id: str
    version_name: str
    version_uploaded: bool
    run_id: str | None = None
    recurring_run_id: str | None = None
    state: str | None = None  # the final state, when the run was followed

    @property
    def url(self) -> str:
        """The run's (or recurring run's) page in the Kubeflow Pipelines UI."""
        base = self.host.rstrip("/")
        if self.recurring_run_id:
            return f"{base}/#/recurringrun/details/{self.recurring_run_id}"
        return f"{base}/#/runs/details/{self.run_id}"


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


def check_cron(expression: str) -> str:
    """KFP's cron (robfig/cron v1): six fields, seconds first, or a descriptor such as @daily.

    KFP reads a five-field crontab line as seconds, minutes, hours, day and month, so it would run
    at the wrong times: it is refused, naming the six-field expression it most likely means.

    Raises:
        PipelineInputError: not six fields nor a descriptor.
    """
    cron = " ".join(expression.split())
    if cron in _CRON_DESCRIPTORS or _GO_DURATION.fullmatch(cron):
        return cron
    fields = cron.split(" ")
    if len(fields) == 5:
        raise PipelineInputError(
            f"schedule '{cron}': Kubeflow Pipelines cron expressions have six fields, seconds "
            f"first; for this crontab line use '0 {cron}'"
        )
    if len(fields) != 6 or not all(_CRON_FIELD.fullmatch(field) for field in fields):
        raise PipelineInputError(
            f"schedule '{expression}': expected six cron fields (second minute hour "
            "day-of-month month day-of-week, e.g. '0 0 3 * * *') or a descriptor such as @daily"
        )
    return cron


def _dag_tasks(pipeline_spec: dict):
    yield pipeline_spec.get("root", {}).get("dag", {}).get("tasks", {})
    for component in pipeline_spec.get("components", {}).values():
        yield component.get("dag", {}).get("tasks", {})


@dataclass(frozen=True)
class _Package:
    path: Path
    version: str  # the name of the pipeline version that holds this spec
    digest: str
    description: str


def _package(
    scratch: Path, enable_caching: bool, pipeline_name: str, compile_spec=compile_pipeline
) -> _Package:
    """The spec to upload (what `compile_spec` writes), with caching off in every task unless
    enabled."""
    compiled = compile_spec(scratch / "compiled.yaml")
    pipeline_spec, platform_spec = read_spec(compiled)
    if not enable_caching:
        for tasks in _dag_tasks(pipeline_spec):
            for task in tasks.values():
                task["cachingOptions"] = {**task.get("cachingOptions", {}), "enableCache": False}
    package = scratch / f"{pipeline_name}.yaml"
    documents = [pipeline_spec, *([platform_spec] if platform_spec else [])]
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # the C one when there: a large spec
    package.write_text(yaml.dump_all(documents, Dumper=dumper, sort_keys=True), encoding="utf-8")
    return _Package(
        path=package,
        version=version_name(pipeline_spec, platform_spec),
        digest=spec_digest(pipeline_spec, platform_spec),
        description=pipeline_spec.get("pipelineInfo", {}).get("description", ""),
    )


def _api_message(error) -> str:
    detail = ""
    try:
        body = json.loads(error.body or "{}")
        detail = body.get("message") or body.get("error") or ""
    except (ValueError, AttributeError):
        detail = str(error.body or "")
    detail = " ".join(str(detail).split())[:300]
    return f"HTTP {error.status} {error.reason}" + (f": {detail}" if detail else "")


def _call(what: str, function, *args, creates: bool = False, **kwargs):
    """Call the kfp client: its prints are dropped (we print one summary), transient faults are
    retried (see the module's docstring), its API errors are one line.

    Args:
        creates: the call creates something: retried only when the request was not acted on.
    """
    from kfp_server_api import ApiException

    transient = retry.is_refused_before_processing if creates else retry.is_transient
    tries = 0

    def once():
        nonlocal tries
        tries += 1
        with contextlib.redirect_stdout(io.StringIO()):
            return function(*args, **kwargs)

    try:
        return retry.retry_transient(f"Kubeflow Pipelines: {what}", once, transient=transient)
    except ApiException as error:
        after = f" (after {tries} attempts)" if tries > 1 else ""
        raise SubmitFailed(
            f"Kubeflow Pipelines refused to {what}: {_api_message(error)}{after}"
        ) from None
    except Exception as error:
        if not retry.is_transient(error):
            raise
        if transient(error):
            detail = f"after {tries} attempts"
        else:
            detail = "not retried: the server may have acted on it, look before submitting again"
        raise SubmitFailed(
            f"Kubeflow Pipelines did not answer to {what} ({detail}; {retry.one_line(error)})"
        ) from None


def _client(host: str, namespace: str | None):
    import kfp

    options = {"namespace": namespace} if namespace else {}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        # "This client only works with Kubeflow Pipeline v2.0.0-beta.2 and later versions."
        warnings.filterwarnings("ignore", message="This client only works", category=FutureWarning)
        return kfp.Client(host=host, existing_token=os.environ.get(TOKEN_ENV) or None, **options)


def _equals(key: str, value: str) -> str:
    """A v2beta1 list filter: `key` equals `value`."""
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": key, "string_value": value}]})


def _find_pipeline(client, name: str, namespace: str | None) -> str | None:
    found = _call(
        f"list the pipelines named '{name}'",
        client.list_pipelines,
        filter=_equals("display_name", name),
        namespace=namespace,
        page_size=2,
    )
    pipelines = [p for p in found.pipelines or [] if p.display_name == name]
    if len(pipelines) > 1:
        raise SubmitFailed(f"there are {len(pipelines)} pipelines named '{name}'; expected one")
    return pipelines[0].pipeline_id if pipelines else None


def _upload(
    client, package: _Package, name: str, namespace: str | None
) -> tuple[str, str, str, bool]:
    """The pipeline's id, and the id and name of the version that holds this spec, uploaded
    now (True) or before (False)."""
    version = package.version
    pipeline_id = _find_pipeline(client, name, namespace)
    if pipeline_id is None:
        pipeline = _call(
            f"upload the pipeline '{name}'",
            client.upload_pipeline,
            str(package.path),
            pipeline_name=name,
            description=package.description,
            namespace=namespace,
            creates=True,
        )
        versions = _call(
            f"list the versions of the pipeline '{name}'",
            client.list_pipeline_versions,
            pipeline.pipeline_id,
            page_size=1,
            sort_by="created_at desc",
        ).pipeline_versions
        if not versions:
            raise SubmitFailed(f"the pipeline '{name}' was uploaded but has no version")
        return pipeline.pipeline_id, versions[0].pipeline_version_id, versions[0].display_name, True

    existing = _call(
        f"list the versions of the pipeline '{name}'",
        client.list_pipeline_versions,
        pipeline_id,
        filter=_equals("display_name", version),
        page_size=2,
    ).pipeline_versions
    same = [v for v in existing or [] if v.display_name == version]
    if same:
        return pipeline_id, same[0].pipeline_version_id, version, False
    created = _call(
        f"upload the version '{version}' of the pipeline '{name}'",
        client.upload_pipeline_version,
        str(package.path),
        version,
        pipeline_id=pipeline_id,
        description=f"{PACKAGE} {package_version()}, pipeline spec sha256 {package.digest}",
        creates=True,
    )
    return pipeline_id, created.pipeline_version_id, version, True


class _RunTimeout(Exception):
    """The followed run did not end before the deadline (not a fault to retry)."""


def _follow(client, run_id: str, url: str, run_timeout: float, poll_seconds: float) -> str:
    # A retry after a fault (the API server restarting during an hour-long wait) follows on
    # until the same deadline, not for another run_timeout.
    deadline = time.monotonic() + run_timeout

    def wait():
        try:
            return client.wait_for_run_completion(
                run_id,
                timeout=max(deadline - time.monotonic(), 0.0),
                sleep_duration=poll_seconds,
            )
        except TimeoutError:
            if time.monotonic() < deadline:
                raise  # a socket's timeout, not kfp's "Run timeout": a fault, retried
            raise _RunTimeout() from None

    try:
        run = _call(f"report the run {run_id}", wait)
    except _RunTimeout:
        raise RunFailed(
            run_id, None, f"run {run_id} did not finish within {run_timeout:g} s ({url})"
        ) from None
    state = str(run.state or "UNKNOWN")
    if state != SUCCEEDED:
        raise RunFailed(run_id, state, f"run {run_id} ended in state {state} ({url})")
    return state


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
    schedule: str | None = None,
    pipeline_name: str | None = None,
    poll_seconds: float = 5.0,
    on_created: Callable[[Submission], None] | None = None,
    pipeline: str = "training",
    training_mode: str = "full",
) -> Submission:
    """Compile, upload as a pipeline version, and create a run (or a recurring run) of it.

    The bearer token, if the server needs one, comes from the KFP_TOKEN environment variable.

    Args:
        config: the checked run config; its values become the run's parameters.
        host: the KFP API endpoint, e.g. http://localhost:8080 or https://host/pipeline.
        experiment: the experiment's name; created when missing.
        run_name: the run's name (default: `<model_name>-<pipeline>`).
        namespace: the profile namespace on a multi-user install.
        service_account: the Kubernetes service account of the run's pods.
        enable_caching: keep the compile-time caching settings; off disables every task's cache.
        wait: follow the run until it ends; not with a schedule.
        timeout: seconds to wait for the host to answer at all.
        run_timeout: seconds to follow the run (with wait).
        schedule: a KFP cron expression (six fields, seconds first): a recurring run instead.
        pipeline_name: the pipeline that the spec becomes a version of (default: the pipeline's
            own name, mlpipe-training or mlpipe-monitoring).
        poll_seconds: seconds between looks at a followed run.
        on_created: called with the submission once the run or recurring run exists (before
            a followed run ends), e.g. to show where it is.
        training_mode: the training pipeline's full or incremental (a schedule of incremental
            updates without the monitor); its trigger is `schedule` with a cron, else `manual`.
        pipeline: training, or monitoring: the monitoring pipeline's spec, with its own
            arguments (pipelines.monitor_cli.monitoring_arguments), usually on a
            schedule; or batch-prediction: the batch-prediction pipeline's spec
            (pipelines.predict_cli.batch_prediction_arguments: data.source scored by the
            champion into predict.output).

    Raises:
        PipelineInputError: bad schedule, wait with a schedule, or the host does not answer.
        SubmitFailed: the API server refused a call; RunFailed: the followed run did not succeed.
    """
    cron = check_cron(schedule) if schedule else None
    if pipeline not in PIPELINES:
        raise PipelineInputError(f"pipeline '{pipeline}': expected one of {', '.join(PIPELINES)}")
    if pipeline == "monitoring":
        from pipelines import monitoring_pipeline
        from pipelines.monitor_cli import monitoring_arguments

        compile_spec = partial(monitoring_pipeline.compile_pipeline, resources=config.resources)
        pipeline_name = pipeline_name or monitoring_pipeline.PIPELINE_NAME
        arguments = monitoring_arguments(config, resolve_paths=False)
    elif pipeline == "batch-prediction":
        from pipelines import batch_prediction_pipeline
        from pipelines.predict_cli import batch_prediction_arguments

        compile_spec = partial(
            batch_prediction_pipeline.compile_pipeline, resources=config.resources
        )
        pipeline_name = pipeline_name or batch_prediction_pipeline.PIPELINE_NAME
        arguments = batch_prediction_arguments(config, resolve_paths=False)
    else:
        compile_spec = partial(compile_pipeline, resources=config.resources)
        pipeline_name = pipeline_name or PIPELINE_NAME
        # A scheduled training run is recorded as such in the lineage of what it registers.
        arguments = {
            **pipeline_arguments(config, resolve_paths=False),
            "training_mode": training_mode,
            "trigger": "schedule" if cron else "manual",
        }
    if wait and cron:
        raise PipelineInputError(
            "wait follows one run, and a schedule creates a recurring run: use one of them"
        )
    # The fail-fast gate: a host where nothing answers at all is a wrong --host, reported at
    # once; the calls after it retry faults of a server that did answer (a pod restarting).
    check_host(host, timeout)
    client = _client(host, namespace)
    namespace = namespace or client.get_user_namespace() or None
    display_name = run_name or f"{config.model_name}-{pipeline}"

    experiment_id = _call(
        f"create the experiment '{experiment}'",
        client.create_experiment,
        experiment,
        namespace=namespace,
    ).experiment_id
    with tempfile.TemporaryDirectory(prefix="mlpipe-submit-") as scratch:
        package = _package(Path(scratch), enable_caching, pipeline_name, compile_spec)
        pipeline_id, version_id, version, uploaded = _upload(
            client, package, pipeline_name, namespace
        )
    common = dict(
        experiment_id=experiment_id,
        job_name=display_name,
        params=arguments,
        pipeline_id=pipeline_id,
        version_id=version_id,
        service_account=service_account,
    )
    made = dict(
        host=host,
        experiment_id=experiment_id,
        pipeline_name=pipeline_name,
        pipeline_id=pipeline_id,
        version_id=version_id,
        version_name=version,
        version_uploaded=uploaded,
    )
    if cron:
        recurring = _call(
            f"create the recurring run '{display_name}'",
            client.create_recurring_run,
            creates=True,
            cron_expression=cron,
            max_concurrency=MAX_CONCURRENCY,
            no_catchup=True,
            enabled=True,
            **common,
        )
        submission = Submission(**made, recurring_run_id=recurring.recurring_run_id)
        if on_created:
            on_created(submission)
        return submission

    run = _call(f"create the run '{display_name}'", client.run_pipeline, creates=True, **common)
    submission = Submission(**made, run_id=run.run_id)
    if on_created:
        on_created(submission)
    if not wait:
        return submission
    state = _follow(client, run.run_id, submission.url, run_timeout, poll_seconds)
    return Submission(**made, run_id=run.run_id, state=state)
