"""KFP component: deploy the registered model to a real KServe model server and smoke-test it."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def deploy(
    model_uri: str,
    test: Input[Dataset],
    serving_config: dict,
    deploy_config: dict,
    predictions: Output[Dataset],
) -> NamedTuple("DeployOutputs", [("endpoint", str), ("matches", bool), ("rollout", str)]):
    """Validates the registered version in a real KServe model server, then rolls it out.

    First, always: a model server on 127.0.0.1 (inside this step) gets held-out rows by the V1 and
    V2 protocols, and its answers must equal the in-process model's. Then, by `deploy.target`: "local"
    stops there; "kserve" creates or patches the InferenceService and waits until it is Ready;
    "gitops" commits the InferenceService to a Git repository for Argo CD or Flux to apply.

    Args:
        model_uri: the registered version folder.
        test: the held-out rows, of which `serving.smoke_rows`, drawn at random (seed 0), are sent.
        serving_config: the run config's `serving:` section (components.common.settings.
            sections.ServingConfig): `smoke_rows`, how many held-out rows to send; with
            `log_predictions`, the local server logs them in `prediction_log` (the demo's smoke
            traffic lands in the prediction log), and so does the InferenceService's predictor
            when `prediction_log` is s3:// or gs://.
        deploy_config: the run config's `deploy:` section (DeployConfig): `target`, local,
            kserve or gitops; `namespace`, the InferenceService's; `storage_uri`, the model
            store as KServe reads it (s3://, gs://, pvc://); `canary_traffic_percent`, 1-99 to
            send that share to the new revision, 0 for all; `gitops_repo` (a token comes from
            GITOPS_TOKEN), `gitops_path`, `gitops_branch`; `timeout_seconds`, how long to wait
            for the InferenceService to be Ready.
        predictions: the rows sent with the server's predictions (Parquet).

    Returns:
        The local endpoint that answered, whether V1 and V2 matched the in-process model, and
        what was rolled out (the service URL, git:<commit>, or "local").
    """
    from typing import NamedTuple

    from components.common.image import SERVING_IMAGE
    from components.common.io import read_frame, write_frame
    from components.common.settings.parse import parse_section
    from components.common.settings.sections import DeployConfig, ServingConfig
    from components.common.step import step_summary, user_errors
    from components.deploy.cluster import rollout
    from components.deploy.logic import smoke_test

    with user_errors("deploy"):
        serving = parse_section(ServingConfig, serving_config, "serving")
        settings = parse_section(DeployConfig, deploy_config, "deploy")
    held_out = read_frame(test.path)
    # Drawn, not the first rows: the held-out split keeps the lake's order (by year in the demo),
    # and this traffic is what the monitor compares with the training reference first.
    rows = held_out.sample(n=min(serving.smoke_rows, len(held_out)), random_state=0)
    prediction_log = serving.prediction_log if serving.log_predictions else ""
    with user_errors("deploy"):
        result = smoke_test(model_uri, rows, prediction_log=prediction_log or None)
    write_frame(predictions.path, rows.assign(prediction=result["predictions"]))
    predictions.metadata.update({"rows": len(rows), "model_version": result["version"]})
    matches = bool(result["v1_matches"] and result["v2_matches"])
    step_summary(
        "deploy",
        f"{result['model_name']} {result['version']} answered {len(rows)} rows at "
        f"{result['endpoint']} (V1 and V2 match the in-process model: {matches})",
    )
    rolled_out = "local"
    if settings.target != "local":
        with user_errors("deploy"):
            rolled_out = rollout(
                model_uri,
                settings.target,
                settings.namespace,
                settings.storage_uri,
                SERVING_IMAGE,
                canary_traffic_percent=settings.canary_traffic_percent,
                gitops_repo=settings.gitops_repo,
                gitops_path=settings.gitops_path,
                gitops_branch=settings.gitops_branch,
                timeout=settings.timeout_seconds,
                prediction_log=prediction_log,
            )
        step_summary("deploy", f"rolled out {result['version']} by {settings.target}: {rolled_out}")
    outputs = NamedTuple("DeployOutputs", [("endpoint", str), ("matches", bool), ("rollout", str)])
    return outputs(result["endpoint"], matches, rolled_out)
