"""The cluster deploy paths. No Kubernetes API server can run here, so apply_inference_service is
checked in a contract test against a stub of the few custom-object routes it calls; the GitOps
path runs for real against a local bare Git repository."""

import base64
import json
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from components.common.errors import PipelineInputError
from components.common.image import SERVING_IMAGE
from components.deploy.cluster import (
    DeployFailed,
    _extra_header_env,
    apply_inference_service,
    check_inference_service,
    commit_to_gitops_repo,
    git_auth_env,
    inference_service,
    rollout,
    version_storage_uri,
)
from components.deploy.cluster import _git as cluster_git

ROOT = Path(__file__).parents[2]
ROUTE = "/apis/serving.kserve.io/v1beta1/namespaces/mlpipe/inferenceservices"


@pytest.fixture
def manifest():
    return inference_service(
        "arrests-release",
        "v3",
        version_storage_uri("s3://mlpipe-models", "arrests-release", "v3"),
        "mlpipe",
        SERVING_IMAGE,
        canary_traffic_percent=10,
    )


def test_manifest_is_a_valid_kserve_inference_service(manifest):
    check_inference_service(manifest)
    predictor = manifest["spec"]["predictor"]
    container = predictor["containers"][0]
    assert predictor["canaryTrafficPercent"] == 10
    assert container["image"] == SERVING_IMAGE
    assert {"name": "STORAGE_URI", "value": "s3://mlpipe-models/arrests-release/v3"} in container[
        "env"
    ]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["securityContext"]["runAsNonRoot"] is True
    assert manifest["metadata"]["labels"]["mlpipe.io/model-version"] == "v3"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda m: m["spec"]["predictor"].update(bogus=1), "spec.predictor.bogus"),
        (lambda m: m["spec"]["predictor"]["containers"][0].update(imgae="x"), "imgae"),
        (lambda m: m["spec"].update(predictr=m["spec"].pop("predictor")), "`predictor`, must not"),
    ],
)
def test_unknown_fields_are_named(manifest, mutate, field):
    broken = json.loads(json.dumps(manifest))
    mutate(broken)
    with pytest.raises(PipelineInputError, match=field):
        check_inference_service(broken)


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed"
)
def test_the_pipelines_rollout_matches_the_gitops_base_manifest():
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "manifests" / "base")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    base = next(d for d in yaml.safe_load_all(rendered) if d["kind"] == "InferenceService")
    storage = next(
        e["value"]
        for e in base["spec"]["predictor"]["containers"][0]["env"]
        if e["name"] == "STORAGE_URI"
    )
    built = inference_service(
        base["metadata"]["name"], "v1", storage, base["metadata"]["namespace"], SERVING_IMAGE
    )
    assert built["spec"] == base["spec"]


def test_storage_prefix_must_be_a_uri():
    with pytest.raises(PipelineInputError, match="deploy.storage_uri 'models'"):
        version_storage_uri("models", "m", "v1")


class KubernetesStub:
    """The custom-object routes for InferenceServices, with a scripted readiness."""

    def __init__(self, ready_after_gets=1, create_status=None):
        self.objects, self.requests = {}, []
        self.ready_after_gets, self.create_status = ready_after_gets, create_status
        self.gets = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self):
                return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

            def do_POST(self):
                body = self._body()
                stub.requests.append(("POST", self.path, self.headers["Content-Type"], body))
                if stub.create_status:
                    return self._send(stub.create_status, {"reason": "Forbidden"})
                name = body["metadata"]["name"]
                if name in stub.objects:
                    return self._send(409, {"reason": "AlreadyExists"})
                stub.objects[name] = {**body, "metadata": {**body["metadata"], "generation": 1}}
                self._send(201, stub.objects[name])

            def do_PATCH(self):
                body = self._body()
                stub.requests.append(("PATCH", self.path, self.headers["Content-Type"], body))
                name = self.path.rsplit("/", 1)[1]
                generation = stub.objects[name]["metadata"]["generation"] + 1
                stub.objects[name] = {
                    **body,
                    "metadata": {**body["metadata"], "generation": generation},
                }
                stub.gets = 0
                self._send(200, stub.objects[name])

            def do_GET(self):
                name = self.path.rsplit("/", 1)[1]
                stub.gets += 1
                current = dict(stub.objects[name])
                ready = stub.gets >= stub.ready_after_gets
                current["status"] = {
                    "observedGeneration": current["metadata"]["generation"],
                    "url": f"http://{name}.mlpipe.example.com",
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True" if ready else "False",
                            "reason": "Rolling",
                        }
                    ],
                }
                self._send(200, current)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def api_client(self):
        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        return client.ApiClient(configuration)


@pytest.fixture
def kubernetes_stub(request):
    stub = KubernetesStub(**getattr(request, "param", {}))
    stub.thread.start()
    yield stub
    stub.server.shutdown()
    stub.server.server_close()


def test_apply_creates_then_patches_and_waits_for_ready(kubernetes_stub, manifest):
    url = apply_inference_service(manifest, poll=0.01, api_client=kubernetes_stub.api_client())
    assert url == "http://arrests-release.mlpipe.example.com"
    method, path, _, body = kubernetes_stub.requests[0]
    assert (method, path, body) == ("POST", ROUTE, manifest)

    kubernetes_stub.ready_after_gets = 3  # the new revision takes a few polls to become ready
    apply_inference_service(manifest, poll=0.01, api_client=kubernetes_stub.api_client())
    assert [r[0] for r in kubernetes_stub.requests] == ["POST", "POST", "PATCH"]
    _, path, content_type, body = kubernetes_stub.requests[2]
    assert path == f"{ROUTE}/arrests-release" and body == manifest
    assert content_type == "application/merge-patch+json"
    assert kubernetes_stub.gets >= 3


@pytest.mark.parametrize("kubernetes_stub", [{"ready_after_gets": 10**6}], indirect=True)
def test_a_service_that_never_gets_ready_fails_within_the_timeout(kubernetes_stub, manifest):
    with pytest.raises(DeployFailed, match="was not Ready after 0.2 s \\(Ready=False Rolling\\)"):
        apply_inference_service(
            manifest, timeout=0.2, poll=0.01, api_client=kubernetes_stub.api_client()
        )


@pytest.mark.parametrize("kubernetes_stub", [{"create_status": 403}], indirect=True)
def test_a_refused_create_names_the_service_and_status(kubernetes_stub, manifest):
    with pytest.raises(
        DeployFailed, match="mlpipe/arrests-release: the API refused it \\(HTTP 403"
    ):
        apply_inference_service(manifest, api_client=kubernetes_stub.api_client())


def _git(*args, cwd):
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def gitops_repo(tmp_path):
    """A bare repository with one commit on main, as a Git server would hold it."""
    bare = tmp_path / "gitops.git"
    _git("init", "--quiet", "--bare", "--initial-branch=main", str(bare), cwd=tmp_path)
    seed = tmp_path / "seed"
    _git("clone", "--quiet", str(bare), str(seed), cwd=tmp_path)
    (seed / "README.md").write_text("apps\n")
    _git("add", "README.md", cwd=seed)
    _git("commit", "--quiet", "-m", "seed", cwd=seed)
    _git("push", "--quiet", "origin", "HEAD:main", cwd=seed)
    return bare


def test_gitops_commits_the_manifest_and_is_idempotent(gitops_repo, manifest):
    sha = commit_to_gitops_repo(manifest, f"file://{gitops_repo}", "apps/mlpipe")
    assert _git("rev-parse", "main", cwd=gitops_repo) == sha
    pushed = _git("show", "main:apps/mlpipe/arrests-release.yaml", cwd=gitops_repo)
    assert yaml.safe_load(pushed) == manifest
    assert _git("log", "-1", "--format=%s", "main", cwd=gitops_repo) == "deploy arrests-release v3"
    # The same version again changes nothing and makes no commit.
    assert commit_to_gitops_repo(manifest, f"file://{gitops_repo}", "apps/mlpipe") == sha


def test_gitops_refuses_a_folder_outside_the_repo(gitops_repo, manifest):
    with pytest.raises(PipelineInputError, match="deploy.gitops_path '../elsewhere'"):
        commit_to_gitops_repo(manifest, f"file://{gitops_repo}", "../elsewhere")


def test_gitops_names_gits_error_when_the_repo_is_missing(tmp_path, manifest):
    with pytest.raises(DeployFailed, match="git clone failed"):
        commit_to_gitops_repo(manifest, f"file://{tmp_path}/absent.git", "apps")


TOKEN = "ghp_TopSecret123"


def _recording_git(monkeypatch):
    """subprocess.run as the deploy code calls it, recording each git call's arguments, the
    environment it added, and every .git/config under its working folder just after it ran."""
    import components.deploy.cluster as cluster

    real_run, calls = subprocess.run, []

    def run(argv, **kwargs):
        result = real_run(argv, **kwargs)
        configs = [
            p.read_text() for p in Path(kwargs["cwd"]).rglob("config") if p.parent.name == ".git"
        ]
        calls.append({"argv": argv, "env": kwargs.get("env") or {}, "configs": configs})
        return result

    monkeypatch.setattr(cluster.subprocess, "run", run)
    return calls


def test_the_gitops_token_goes_through_the_environment_never_the_url(
    gitops_repo, model_dir, tmp_path, monkeypatch
):
    # The https URL a user configures, served here by the local bare repository: git's
    # insteadOf (in a global config of the test's own) rewrites it when git connects.
    url = "https://git.example/org/gitops.git"
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text(f'[url "file://{gitops_repo}"]\n\tinsteadOf = {url}\n')
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
    monkeypatch.setenv("GITOPS_TOKEN", TOKEN)
    calls = _recording_git(monkeypatch)

    result = rollout(
        str(model_dir),
        "gitops",
        "mlpipe",
        "s3://mlpipe-models",
        SERVING_IMAGE,
        gitops_repo=url,
        gitops_path="apps/mlpipe",
    )

    assert result == "git:" + _git("rev-parse", "main", cwd=gitops_repo)
    assert all(TOKEN not in " ".join(call["argv"]) for call in calls)
    configs = [text for call in calls for text in call["configs"]]
    assert configs and all(TOKEN not in text for text in configs)
    assert any(url in text for text in configs)  # the clone's origin: the URL as given
    # Clone and push carry the token, as an Authorization header set in the environment.
    header = "Authorization: Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    by_command = {call["argv"][5]: call["env"] for call in calls}
    for command in ("clone", "push"):
        assert by_command[command]["GIT_CONFIG_KEY_0"] == "http.https://git.example/.extraHeader"
        assert by_command[command]["GIT_CONFIG_VALUE_0"] == header
    assert "GIT_CONFIG_COUNT" not in by_command["commit"]  # only what talks to the server


def test_git_sends_the_token_from_the_environment_as_a_header(tmp_path):
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/"
        with pytest.raises(DeployFailed) as caught:
            cluster_git(
                "ls-remote",
                base + "org/gitops.git",
                cwd=tmp_path,
                env=_extra_header_env(base, TOKEN),
            )
    finally:
        server.shutdown()
        server.server_close()
    expected = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert seen and seen[0] == expected
    assert TOKEN not in str(caught.value)


def test_git_auth_env_only_for_https_and_a_token(monkeypatch):
    monkeypatch.delenv("GITOPS_TOKEN", raising=False)
    assert git_auth_env("https://git.example/o/r.git") == {}
    assert git_auth_env("file:///srv/r.git", TOKEN) == {}
    assert git_auth_env("http://git.example/o/r.git", TOKEN) == {}  # never in clear text
    monkeypatch.setenv("GITOPS_TOKEN", TOKEN)
    env = git_auth_env("https://bot@git.example:8443/o/r.git")
    assert env["GIT_CONFIG_KEY_0"] == "http.https://git.example:8443/.extraHeader"


def test_a_token_in_the_gitops_url_is_refused_without_showing_it(manifest):
    with pytest.raises(PipelineInputError) as caught:
        commit_to_gitops_repo(manifest, f"https://x-access-token:{TOKEN}@git.example/o.git", "apps")
    assert "put the token in GITOPS_TOKEN" in str(caught.value)
    assert "x-access-token:***@git.example" in str(caught.value)
    assert TOKEN not in str(caught.value)


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "models" / "arrests-release" / "v3"
    folder.mkdir(parents=True)
    (folder / "model.joblib").write_bytes(b"not loaded by rollout")
    schema = {
        "target": "y",
        "task": "classification",
        "features": [{"name": "x", "kind": "numeric"}],
    }
    (folder / "metadata.json").write_text(
        json.dumps({"name": "arrests-release", "version": "v3", "schema": schema})
    )
    return folder


def test_rollout_to_kserve_applies_the_version_from_the_registry(kubernetes_stub, model_dir):
    url = rollout(
        str(model_dir),
        "kserve",
        "mlpipe",
        "pvc://mlpipe-models",
        SERVING_IMAGE,
        canary_traffic_percent=20,
        api_client=kubernetes_stub.api_client(),
    )
    assert url == "http://arrests-release.mlpipe.example.com"
    body = kubernetes_stub.requests[0][3]
    container = body["spec"]["predictor"]["containers"][0]
    assert {"name": "STORAGE_URI", "value": "pvc://mlpipe-models/arrests-release/v3"} in container[
        "env"
    ]
    assert body["spec"]["predictor"]["canaryTrafficPercent"] == 20


def test_rollout_by_gitops_commits_the_version(gitops_repo, model_dir):
    result = rollout(
        str(model_dir),
        "gitops",
        "mlpipe",
        "s3://mlpipe-models",
        SERVING_IMAGE,
        gitops_repo=f"file://{gitops_repo}",
        gitops_path="apps/mlpipe",
    )
    assert result == "git:" + _git("rev-parse", "main", cwd=gitops_repo)
    pushed = yaml.safe_load(_git("show", "main:apps/mlpipe/arrests-release.yaml", cwd=gitops_repo))
    assert "canaryTrafficPercent" not in pushed["spec"]["predictor"]


@pytest.mark.parametrize(
    ("target", "kwargs", "message"),
    [
        ("cloud", {}, "deploy.target 'cloud'"),
        ("gitops", {}, "deploy.gitops_repo: set it"),
    ],
)
def test_rollout_names_a_missing_setting(model_dir, target, kwargs, message):
    with pytest.raises(PipelineInputError, match=message):
        rollout(str(model_dir), target, "mlpipe", "s3://m", SERVING_IMAGE, **kwargs)


@pytest.mark.parametrize(
    ("prediction_log", "in_pod"),
    [
        ("s3://mlpipe-logs/predictions", True),
        ("gs://mlpipe-logs/predictions", True),
        # A folder of the machine that ran the pipeline means nothing inside a pod: off there.
        ("/home/me/mlpipe-output/predictions", False),
        ("file:///tmp/predictions", False),
        ("", False),
    ],
)
def test_the_predictor_logs_predictions_only_to_an_object_store(
    kubernetes_stub, model_dir, prediction_log, in_pod
):
    rollout(
        str(model_dir),
        "kserve",
        "mlpipe",
        "pvc://mlpipe-models",
        SERVING_IMAGE,
        api_client=kubernetes_stub.api_client(),
        prediction_log=prediction_log,
    )
    container = kubernetes_stub.requests[0][3]["spec"]["predictor"]["containers"][0]
    logged = [e for e in container["env"] if e["name"] == "MLPIPE_PREDICTION_LOG"]
    assert logged == (
        [{"name": "MLPIPE_PREDICTION_LOG", "value": prediction_log}] if in_pod else []
    )
    check_inference_service(kubernetes_stub.requests[0][3])
