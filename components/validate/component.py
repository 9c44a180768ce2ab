"""KFP component: validate the ingested table against the run config and the data contract."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def validate(
    dataset: Input[Dataset],
    target: str,
    task: str,
    sensitive_columns: list,
    column_types: dict,
    contract_config: dict,
    reviewed_contract: str,
    schema: Output[Artifact],
    contract: Output[Artifact],
    anomalies: Output[Artifact],
    report: Output[Markdown],
):
    """Checks the columns the run needs, then the data contract; fails the run naming the column,
    the expectation and the observed value when an anomaly blocks.

    Args:
        dataset: the ingested table.
        target: the label column.
        task: "classification" or "regression".
        sensitive_columns: columns that must exist for bias analysis.
        column_types: declared column kinds ("numeric"/"categorical") that must hold.
        contract_config: the run config's `contract:` section (components.common.settings.
            sections.ContractConfig): `severity`, "block" or "warn" per anomaly kind over the
            defaults; `unseen_category_rate`, unseen categories are an anomaly only above this
            share of rows; `null_rate_margin`, a null rate is an anomaly only above the
            contract's rate plus this.
        reviewed_contract: the reviewed contract (the file `contract.path` names) as JSON;
            empty infers one from this data.
        schema: JSON with target, task, classes and the features' names and kinds.
        contract: the contract the data was checked against (inferred or the reviewed one), as
            YAML, ready to review and commit.
        anomalies: every anomaly as JSON (kind, column, expectation, observed, severity).
        report: the anomalies as Markdown (shown in the Kubeflow dashboard).
    """
    import json

    import yaml

    from components.common.io import read_frame, write_json, write_text
    from components.common.settings.contract import check_contract_format
    from components.common.settings.parse import parse_section
    from components.common.settings.sections import ContractConfig
    from components.common.step import step_summary, user_errors
    from components.validate.contract import (
        anomalies_markdown,
        blocking,
        check_contract,
        describe,
        infer_contract,
    )
    from components.validate.logic import validate_table

    frame = read_frame(dataset.path)
    with user_errors("validate"):
        settings = parse_section(ContractConfig, contract_config, "contract")
        table_schema = validate_table(frame, target, task, sensitive_columns, column_types)
        if reviewed_contract:
            expected = json.loads(reviewed_contract)
            check_contract_format(expected, "contract")
            found = check_contract(
                frame,
                expected,
                dict(settings.severity),
                settings.unseen_category_rate,
                settings.null_rate_margin,
            )
        else:
            expected, found = infer_contract(frame), []
    write_json(schema.path, table_schema)
    write_text(contract.path, yaml.safe_dump(expected, sort_keys=False))
    write_json(anomalies.path, found)
    write_text(report.path, anomalies_markdown(found, inferred=not reviewed_contract))
    contract.metadata["inferred"] = not reviewed_contract
    anomalies.metadata.update({"count": len(found), "blocking": len(blocking(found))})
    schema.metadata.update({"features": len(table_schema["features"]), "target": target})
    for anomaly in found:
        if anomaly["severity"] == "warn":
            step_summary("validate", "warning: " + describe(anomaly))
    with user_errors("validate"):
        stops = blocking(found)
        if stops:
            from components.common.errors import PipelineInputError

            more = f" (and {len(stops) - 1} more blocking anomalies)" if len(stops) > 1 else ""
            raise PipelineInputError(describe(stops[0]) + more)
    step_summary(
        "validate",
        f"{len(table_schema['features'])} features, target '{target}' ({task}); "
        + (f"{len(found)} contract warnings" if reviewed_contract else "contract inferred"),
    )
