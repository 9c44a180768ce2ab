"""KFP component: deploy the registered model to a real KServe model server and smoke-test it."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def deploy(
    model_uri: str,
    test: Input[Dataset],
    smoke_rows: int,
    target: str,
    namespace: str,
    storage_uri: str,
    canary_traffic_percent: int,
    gitops_repo: str,
    gitops_path: str,
    gitops_branch: str,
    timeout_seconds: int,
    predictions: Output[Dataset],
) -> NamedTuple("DeployOutputs", [("endpoint", str), ("matches", bool), ("rollout", str)]):
    """Validates the registered version in a real KServe model server, then rolls it out.

    First, always: a model server on 127.0.0.1 (inside this step) gets held-out rows by the V1 and
    V2 protocols, and its answers must equal the in-process model's. Then, by `target`: "local"
    stops there; "kserve" creates or patches the InferenceService and waits until it is Ready;
    "gitops" commits the InferenceService to a Git repository for Argo CD or Flux to apply.

    Args:
        model_uri: the registered version folder.
        test: the held-out rows, of which the first `smoke_rows` are sent.
        smoke_rows: how many rows to send.
        target: local, kserve or gitops.
        namespace: the InferenceService's namespace.
        storage_uri: the model store as KServe reads it (s3://, gs://, pvc://).
        canary_traffic_percent: 1-99 to send that share to the new revision; 0 for all.
        gitops_repo: the repository URL (gitops; a token comes from GITOPS_TOKEN).
        gitops_path: the folder in it for the manifest.
        gitops_branch: the branch to push.
        timeout_seconds: how long to wait for the InferenceService to be Ready.
        predictions: the rows sent with the server's predictions (Parquet).

    Returns:
        The local endpoint that answered, whether V1 and V2 matched the in-process model, and
        what was rolled out (the service URL, git:<commit>, or "local").
    """
    from typing import NamedTuple

    from components.common.image import SERVING_IMAGE
    from components.common.io import read_frame, write_frame
    from components.common.step import step_summary, user_errors
    from components.deploy.cluster import rollout
    from components.deploy.logic import smoke_test

    rows = read_frame(test.path).head(smoke_rows)
    with user_errors("deploy"):
        result = smoke_test(model_uri, rows)
    write_frame(predictions.path, rows.assign(prediction=result["predictions"]))
    predictions.metadata.update({"rows": len(rows), "model_version": result["version"]})
    matches = bool(result["v1_matches"] and result["v2_matches"])
    step_summary(
        "deploy",
        f"{result['model_name']} {result['version']} answered {len(rows)} rows at "
        f"{result['endpoint']} (V1 and V2 match the in-process model: {matches})",
    )
    rolled_out = "local"
    if target != "local":
        with user_errors("deploy"):
            rolled_out = rollout(
                model_uri,
                target,
                namespace,
                storage_uri,
                SERVING_IMAGE,
                canary_traffic_percent=canary_traffic_percent,
                gitops_repo=gitops_repo,
                gitops_path=gitops_path,
                gitops_branch=gitops_branch,
                timeout=timeout_seconds,
            )
        step_summary("deploy", f"rolled out {result['version']} by {target}: {rolled_out}")
    outputs = NamedTuple("DeployOutputs", [("endpoint", str), ("matches", bool), ("rollout", str)])
    return outputs(result["endpoint"], matches, rolled_out)
