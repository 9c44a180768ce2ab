"""What a step's pod needs on a cluster, carried by the compiled spec itself: credentials from
Kubernetes Secrets (as environment variables, never as parameters), CPU and memory requests and
limits, and retries for the steps that talk to the network.

Every Secret is optional: a cluster that gives pods their identity another way (IRSA, Workload
Identity, a PodDefault) needs none of them, and a pod whose Secret is absent simply lacks those
variables. Locally (kfp.local) Secrets and resources do not apply; `mlpipe run` passes the
machine's own environment to the steps, and runs them without Kubeflow's retries (see
pipelines/local_run.py).
"""

from kfp import kubernetes

from components.common.settings.resources import ResourcesConfig, resources_of

# The object store's credentials, the Secret README's "Deploy on Kubernetes" creates. Every step
# gets them: besides the steps that read the lake or the registry, any step may read and write
# the shared step cache (MLPIPE_STEP_CACHE) on the store.
OBJECT_STORE_SECRET = "mlpipe-object-store"
OBJECT_STORE_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")
# KubeRay's token Secret for the RayCluster in manifests/ (named after the cluster, key
# auth_token): the tune step's driver needs the token to join a cluster with token
# authentication (Ray >= 2.52 turns token authentication on when it finds RAY_AUTH_TOKEN and
# RAY_AUTH_MODE is unset).
RAY_TOKEN_SECRET = "mlpipe-tune"
RAY_TOKEN_KEY = "auth_token"
# A database source's password (data.etl with password_env: MLPIPE_DB_PASSWORD): ingest only.
DATABASE_SECRET = "mlpipe-database"
DATABASE_PASSWORD_ENV = "MLPIPE_DB_PASSWORD"
# The GitOps repository's token (deploy.target gitops): deploy only.
GITOPS_SECRET = "mlpipe-gitops"
# The alerts webhook (a URL that holds a token): the steps that alert.
ALERTS_SECRET = "mlpipe-alerts"
ALERTS_SECRET_KEY = "webhook_url"
ALERTING_STEPS = frozenset({"gate", "promote", "notify", "monitor"})

# The steps that talk to the network (the lake or database, the registry, the model server):
# a lost connection or an evicted pod is worth another try. The others compute from their
# inputs, and retrying them would only repeat the same failure. A user error is retried too
# (Kubeflow cannot tell them apart), so the backoff is short.
# The steps that may join the KubeRay cluster (its token): tuning, and batch predictions' ray engine.
RAY_STEPS = frozenset({"tune", "batch_predict"})
RETRIED_STEPS = frozenset({"ingest", "register", "deploy", "promote"})
RETRIES = 2
RETRY_BACKOFF = "15s"
RETRY_BACKOFF_FACTOR = 2.0


def step_of(task) -> str:
    """The step a pipeline task runs: its component's function name (export-onnx-model ->
    export_onnx_model), as the tables above name it."""
    return task.component_spec.name.replace("-", "_")


def for_the_cluster(task, resources: ResourcesConfig | None = None):
    """Give `task` what its step's pod needs on a cluster: Secrets as environment variables,
    requests and limits (the defaults in components.common.settings.resources, with the run
    config's `resources:` over them) and, for the steps that talk to the network, retries.
    Returns the task."""
    step = step_of(task)
    kubernetes.use_secret_as_env(
        task,
        secret_name=OBJECT_STORE_SECRET,
        secret_key_to_env={key: key for key in OBJECT_STORE_KEYS},
        optional=True,
    )
    if step in RAY_STEPS:
        kubernetes.use_secret_as_env(
            task,
            secret_name=RAY_TOKEN_SECRET,
            secret_key_to_env={RAY_TOKEN_KEY: "RAY_AUTH_TOKEN"},
            optional=True,
        )
    if step == "ingest":
        kubernetes.use_secret_as_env(
            task,
            secret_name=DATABASE_SECRET,
            secret_key_to_env={"password": DATABASE_PASSWORD_ENV},
            optional=True,
        )
    if step == "deploy":
        kubernetes.use_secret_as_env(
            task,
            secret_name=GITOPS_SECRET,
            secret_key_to_env={"token": "GITOPS_TOKEN"},
            optional=True,
        )
    if step in ALERTING_STEPS:
        # The default alerts.webhook_url_env: a URL that holds a token stays out of the
        # parameters.
        kubernetes.use_secret_as_env(
            task,
            secret_name=ALERTS_SECRET,
            secret_key_to_env={ALERTS_SECRET_KEY: "MLPIPE_ALERT_WEBHOOK_URL"},
            optional=True,
        )
    pod = resources_of(step, resources)
    requests, limits = pod["requests"], pod["limits"]
    task.set_cpu_request(requests["cpu"]).set_cpu_limit(limits["cpu"])
    task.set_memory_request(requests["memory"]).set_memory_limit(limits["memory"])
    if step in RETRIED_STEPS:
        task.set_retry(
            num_retries=RETRIES,
            backoff_duration=RETRY_BACKOFF,
            backoff_factor=RETRY_BACKOFF_FACTOR,
        )
    return task
