"""Deploy on Kubernetes: a KServe InferenceService for a registered model version.

Two ways to roll it out:
- `apply_inference_service`: create or patch it with the Kubernetes API (the pipeline's service
  account needs create/get/patch on inferenceservices in its namespace), then wait until Ready;
- `commit_to_gitops_repo`: write it into a folder of a Git repository and push a commit, so that a
  GitOps controller (Argo CD, Flux) rolls it out.

The object is built with the KServe SDK's model classes, so a field of the wrong type or name is
caught here, before any cluster sees it.
"""

import base64
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from components.common.errors import PipelineInputError
from components.common.registry import version_storage_uri
from components.common.secrets import redact_text, redact_url, url_password_place
from components.common.vocabulary import DEPLOY_TARGETS

KSERVE_GROUP = "serving.kserve.io"
KSERVE_VERSION = "v1beta1"
INFERENCE_SERVICES = "inferenceservices"
# KServe's storage initializer downloads STORAGE_URI here before the predictor starts.
MODEL_MOUNT = "/mnt/models"
SERVING_PORT = 8080
# Only an object store is a prediction log a pod can write and the monitor can read later: a
# local path would be inside the pod's own filesystem, lost with it.
OBJECT_STORE_SCHEMES = ("s3", "gs")


def pod_prediction_log(uri: str) -> str | None:
    """The prediction log a predictor pod can write: `uri` if it is s3:// or gs://, else None
    (a local folder, or nothing: logging stays off in the pod)."""
    return uri if uri and urlsplit(uri).scheme in OBJECT_STORE_SCHEMES else None


class DeployFailed(PipelineInputError):
    """The rollout did not happen or did not become ready; reported as one line, like bad input."""


def inference_service(
    name: str,
    version: str,
    storage_uri: str,
    namespace: str,
    image: str,
    canary_traffic_percent: int | None = None,
    service_account: str = "mlpipe-serving",
    prediction_log: str = "",
) -> dict:
    """The InferenceService for one model version, served by the project's predictor image.

    Its predictor is the one in manifests/base/inferenceservice.yaml (a test holds them equal),
    so a version rolled out by the pipeline and one synced by GitOps run the same way.

    Args:
        name: the model's name (the InferenceService's name and the served model's name).
        version: the registered version, recorded as a label.
        storage_uri: where the version's folder is (see version_storage_uri).
        namespace: the namespace to deploy into.
        image: the serving image.
        canary_traffic_percent: with a percentage, the new revision takes that share of traffic
            and the previous one keeps the rest, until promoted.
        service_account: the predictor's service account, whose Secret holds the object-store
            credentials that KServe's storage initializer uses (manifests/base has it).
        prediction_log: the prediction log's URI; the predictor writes it (env
            MLPIPE_PREDICTION_LOG) only when it is s3:// or gs:// (`pod_prediction_log`). The
            predictor container then needs the store's credentials in its own environment
            (AWS_*, GOOGLE_APPLICATION_CREDENTIALS): those of the storage initializer are not
            its; without them every write fails and is counted as dropped, never a failed
            request.

    Returns:
        The manifest as a plain dict, ready for the Kubernetes API or a YAML file.
    """
    import kserve
    from kubernetes import client

    from components.deploy.logic import PREDICTION_LOG_ENV

    probe = {"port": SERVING_PORT}
    log_env = []
    if pod_prediction_log(prediction_log):
        log_env = [client.V1EnvVar(name=PREDICTION_LOG_ENV, value=prediction_log)]
    container = client.V1Container(
        name="kserve-container",
        image=image,
        # The served model's name comes from the version's metadata.json, which is `name`.
        args=[
            "--model_dir",
            MODEL_MOUNT,
            "--http_port",
            str(SERVING_PORT),
            # Inside the pod the server must take traffic from the cluster network.
            "--host",
            "0.0.0.0",
        ],
        env=[
            client.V1EnvVar(name="STORAGE_URI", value=storage_uri),
            # The admin routes' token (serving.http_app): loopback proves nothing in a pod, whose
            # sidecars connect from 127.0.0.1; without the Secret those routes stay off.
            client.V1EnvVar(
                name="MLPIPE_ADMIN_TOKEN",
                value_from=client.V1EnvVarSource(
                    secret_key_ref=client.V1SecretKeySelector(
                        name="mlpipe-admin-token", key="token", optional=True
                    )
                ),
            ),
            *log_env,
        ],
        ports=[client.V1ContainerPort(container_port=SERVING_PORT, protocol="TCP")],
        # The server's own health routes over HTTP: a TCP probe would pass before the model loads.
        readiness_probe=client.V1Probe(
            http_get=client.V1HTTPGetAction(path="/v2/health/ready", **probe),
            period_seconds=5,
            failure_threshold=3,
        ),
        liveness_probe=client.V1Probe(
            http_get=client.V1HTTPGetAction(path="/v2/health/live", **probe),
            initial_delay_seconds=10,
            period_seconds=10,
            failure_threshold=3,
        ),
        resources=client.V1ResourceRequirements(
            requests={"cpu": "500m", "memory": "1Gi"}, limits={"cpu": "1", "memory": "2Gi"}
        ),
        security_context=client.V1SecurityContext(
            run_as_non_root=True,
            read_only_root_filesystem=True,
            allow_privilege_escalation=False,
            capabilities=client.V1Capabilities(drop=["ALL"]),
            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
        ),
    )
    isvc = kserve.V1beta1InferenceService(
        api_version=f"{KSERVE_GROUP}/{KSERVE_VERSION}",
        kind="InferenceService",
        metadata=client.V1ObjectMeta(
            name=name,
            namespace=namespace,
            labels={
                "app.kubernetes.io/part-of": "mlpipe",
                "mlpipe.io/model-version": version,
            },
        ),
        spec=kserve.V1beta1InferenceServiceSpec(
            predictor=kserve.V1beta1PredictorSpec(
                service_account_name=service_account,
                automount_service_account_token=False,
                min_replicas=1,
                max_replicas=2,
                containers=[container],
                canary_traffic_percent=canary_traffic_percent,
            )
        ),
    )
    return client.ApiClient().sanitize_for_serialization(isvc)


def check_inference_service(manifest: dict) -> None:
    """Check a manifest against the KServe SDK's model classes (and Kubernetes' for the pod parts).

    The SDK's generated classes keep only the fields they know, with their declared types, so a
    round trip that changes the manifest means a field is unknown or misplaced.

    Raises:
        PipelineInputError: naming the first field that does not survive the round trip.
    """
    import json

    import kserve
    from kubernetes import client

    class _Both(client.ApiClient):
        """Resolves class names in KServe's models first, then in Kubernetes' own."""

        def _ApiClient__deserialize(self, data, klass):
            if isinstance(klass, str) and hasattr(kserve.models, klass):
                klass = getattr(kserve.models, klass)
            return super()._ApiClient__deserialize(data, klass)

    api = _Both()
    response = type("Response", (), {"data": json.dumps(manifest)})()
    try:
        parsed = api.deserialize(response, kserve.V1beta1InferenceService)
    except (ValueError, TypeError) as error:
        raise PipelineInputError(f"InferenceService: {error}") from None
    difference = _first_difference(manifest, api.sanitize_for_serialization(parsed))
    if difference:
        raise PipelineInputError(f"InferenceService: field '{difference}' is unknown or mistyped")


def _first_difference(expected, actual, path: str = "") -> str | None:
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in expected:
            where = f"{path}.{key}" if path else key
            if key not in actual:
                return where
            found = _first_difference(expected[key], actual[key], where)
            if found:
                return found
        return None
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        for index, (e, a) in enumerate(zip(expected, actual, strict=True)):
            found = _first_difference(e, a, f"{path}[{index}]")
            if found:
                return found
        return None
    return None if expected == actual else path


def _custom_objects(api_client=None):
    from kubernetes import client, config

    if api_client is None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        api_client = client.ApiClient()
    return client.CustomObjectsApi(api_client)


def _is_ready(isvc: dict) -> bool:
    status = isvc.get("status") or {}
    generation = isvc.get("metadata", {}).get("generation", 0)
    if status.get("observedGeneration", 0) < generation:
        return False
    return any(
        c.get("type") == "Ready" and str(c.get("status")).lower() == "true"
        for c in status.get("conditions", [])
    )


def apply_inference_service(
    manifest: dict, timeout: float = 600.0, poll: float = 5.0, api_client=None
) -> str:
    """Create the InferenceService, or patch it if it exists, and wait until it is Ready.

    Args:
        manifest: from `inference_service`.
        timeout: seconds to wait for the Ready condition.
        poll: seconds between status checks.
        api_client: a kubernetes ApiClient; default: in-cluster config, else ~/.kube/config.

    Returns:
        The URL that KServe reports for the service.

    Raises:
        DeployFailed: the API refused the object, or it was not Ready in time.
    """
    from kubernetes.client.rest import ApiException

    api = _custom_objects(api_client)
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    where = (KSERVE_GROUP, KSERVE_VERSION, namespace, INFERENCE_SERVICES)
    try:
        api.create_namespaced_custom_object(*where, manifest)
    except ApiException as error:
        if error.status != 409:
            raise DeployFailed(
                f"InferenceService {namespace}/{name}: the API refused it "
                f"(HTTP {error.status} {error.reason})"
            ) from None
        try:
            api.patch_namespaced_custom_object(*where, name, manifest)
        except ApiException as patch_error:
            raise DeployFailed(
                f"InferenceService {namespace}/{name}: patch refused "
                f"(HTTP {patch_error.status} {patch_error.reason})"
            ) from None
    deadline = time.monotonic() + timeout
    while True:
        current = api.get_namespaced_custom_object(*where, name)
        if _is_ready(current):
            return (current.get("status") or {}).get("url", "")
        if time.monotonic() > deadline:
            conditions = (current.get("status") or {}).get("conditions", [])
            reasons = "; ".join(
                f"{c.get('type')}={c.get('status')} {c.get('reason', '')}".strip()
                for c in conditions
            )
            raise DeployFailed(
                f"InferenceService {namespace}/{name} was not Ready after {timeout:g} s"
                f" ({reasons or 'no conditions yet'})"
            )
        time.sleep(poll)


def _git(*args: str, cwd: str | Path, env: dict[str, str] | None = None) -> str:
    """Run git; `env` is laid over this process's environment (how a token reaches git)."""
    result = subprocess.run(
        ["git", "-c", "user.name=mlpipe", "-c", "user.email=mlpipe@localhost", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env} if env else None,
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise DeployFailed(f"git {args[0]} failed: {redact_text(last)}")
    return result.stdout.strip()


def git_auth_env(repo_url: str, token: str | None = None) -> dict[str, str]:
    """The environment that makes git send the GitOps token, from GITOPS_TOKEN unless given.

    The token never goes into the URL (it would show in the process list and stay in the
    clone's .git/config) nor into git's arguments: it travels as configuration in the
    environment (GIT_CONFIG_COUNT/KEY/VALUE, git 2.31+), an HTTP Basic header
    `x-access-token:<token>` (what GitHub, Gitea and GitLab accept for a token) sent only to the
    repository's host, and only over https. Empty when there is no token or the URL is not https.
    """
    token = os.environ.get("GITOPS_TOKEN", "") if token is None else token
    parsed = urlsplit(repo_url)
    if not token or parsed.scheme != "https" or not parsed.hostname:
        return {}
    return _extra_header_env(f"https://{parsed.netloc.rpartition('@')[2]}/", token)


def _extra_header_env(base_url: str, token: str) -> dict[str, str]:
    """Environment-only git config: an Authorization header for requests under `base_url`."""
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": f"http.{base_url}.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
        # No credential helper may store what it was given, and git never prompts.
        "GIT_CONFIG_KEY_1": "credential.helper",
        "GIT_CONFIG_VALUE_1": "",
        "GIT_TERMINAL_PROMPT": "0",
    }


def commit_to_gitops_repo(
    manifest: dict, repo_url: str, folder: str, branch: str = "main", attempts: int = 3
) -> str:
    """Write the manifest to <folder>/<name>.yaml in the repository and push one commit.

    A push that loses a race with another commit is retried on top of it. An https repository
    is reached with the token from GITOPS_TOKEN, if set, through the environment only
    (git_auth_env); a URL that carries a password or token itself is refused.

    Returns:
        The pushed commit's SHA.

    Raises:
        DeployFailed: cloning or pushing failed (the message is git's last line).
    """
    name = manifest["metadata"]["name"]
    version = manifest["metadata"]["labels"].get("mlpipe.io/model-version", "")
    if Path(folder).is_absolute() or ".." in Path(folder).parts:
        raise PipelineInputError(f"deploy.gitops_path '{folder}': give a folder inside the repo")
    if url_password_place(repo_url):
        raise PipelineInputError(
            f"deploy.gitops_repo '{redact_url(repo_url)}': put the token in GITOPS_TOKEN, "
            "not in the URL"
        )
    auth = git_auth_env(repo_url)
    scratch = tempfile.mkdtemp(prefix="mlpipe-gitops-")
    try:
        _git(
            "clone",
            "--quiet",
            "--depth",
            "1",
            "--branch",
            branch,
            repo_url,
            "repo",
            cwd=scratch,
            env=auth,
        )
        checkout = Path(scratch) / "repo"
        target = checkout / folder / f"{name}.yaml"
        for _ in range(attempts):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
            _git("add", str(target.relative_to(checkout)), cwd=checkout)
            if not _git("status", "--porcelain", cwd=checkout):
                return _git("rev-parse", "HEAD", cwd=checkout)  # already deployed as is
            _git("commit", "--quiet", "-m", f"deploy {name} {version}".strip(), cwd=checkout)
            try:
                _git("push", "--quiet", "origin", f"HEAD:{branch}", cwd=checkout, env=auth)
                return _git("rev-parse", "HEAD", cwd=checkout)
            except DeployFailed:
                # Someone pushed first: start again from their commit.
                _git("fetch", "--quiet", "--depth", "1", "origin", branch, cwd=checkout, env=auth)
                _git("reset", "--quiet", "--hard", f"origin/{branch}", cwd=checkout)
        raise DeployFailed(f"git push to {repo_url} lost {attempts} races in a row")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def rollout(
    model_dir: str,
    target: str,
    namespace: str,
    storage_uri: str,
    image: str,
    canary_traffic_percent: int = 0,
    gitops_repo: str = "",
    gitops_path: str = "",
    gitops_branch: str = "main",
    timeout: float = 600.0,
    api_client=None,
    prediction_log: str = "",
) -> str:
    """Roll a registered version out to a cluster, after the local smoke test passed.

    Args:
        model_dir: the registered version folder (its metadata names the model and version).
        target: "kserve" applies the InferenceService; "gitops" commits it to `gitops_repo`.
        storage_uri: the model store as KServe sees it (s3://…, gs://…, pvc://…).
        canary_traffic_percent: 1-99 for a canary beside the previous revision; 0 for none.
        prediction_log: the prediction log the predictor writes, if s3:// or gs:// (a local
            folder means nothing in a pod: logging stays off there).

    Returns:
        What was rolled out: the service's URL (kserve) or "git:<commit>" (gitops).
    """
    from components.deploy.logic import read_model_metadata

    if target not in DEPLOY_TARGETS[1:]:
        raise PipelineInputError(
            f"deploy.target '{target}': expected one of {', '.join(DEPLOY_TARGETS)}"
        )
    metadata = read_model_metadata(model_dir)
    name, version = metadata["name"], metadata["version"]
    manifest = inference_service(
        name,
        version,
        version_storage_uri(storage_uri, name, version),
        namespace,
        image,
        canary_traffic_percent=canary_traffic_percent or None,
        prediction_log=prediction_log,
    )
    check_inference_service(manifest)
    if target == "kserve":
        return apply_inference_service(manifest, timeout=timeout, api_client=api_client)
    if not gitops_repo:
        raise PipelineInputError("deploy.gitops_repo: set it for deploy.target gitops")
    sha = commit_to_gitops_repo(manifest, gitops_repo, gitops_path, gitops_branch)
    return f"git:{sha}"
