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
    predictions: Output[Dataset],
) -> NamedTuple("DeployOutputs", [("endpoint", str), ("matches", bool)]):
    """Starts a KServe model server on 127.0.0.1 for the registered version, sends held-out rows
    by the V1 and V2 protocols, checks the answers equal the in-process model's, and stops it.

    Args:
        model_uri: the registered version folder.
        test: the held-out rows, of which the first `smoke_rows` are sent.
        smoke_rows: how many rows to send.
        predictions: the rows sent with the server's predictions (Parquet).

    Returns:
        The endpoint that answered, and whether V1 and V2 matched the in-process model.
    """
    from typing import NamedTuple

    from components.common.io import read_frame, write_frame
    from components.common.step import step_summary, user_errors
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
    outputs = NamedTuple("DeployOutputs", [("endpoint", str), ("matches", bool)])
    return outputs(result["endpoint"], matches)
