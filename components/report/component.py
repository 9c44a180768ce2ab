"""KFP component: the run report, one self-contained HTML page for the whole run."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Output

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def run_report(
    dataset: Input[Dataset],
    schema: Input[Artifact],
    contract: Input[Artifact],
    anomalies: Input[Artifact],
    data_bias: Input[Markdown],
    fairness_data: Input[Artifact],
    fairness_summary: Input[Artifact],
    best: Input[Artifact],
    trials: Input[Dataset],
    evaluation: Input[Artifact],
    gate: Input[Artifact],
    model_name: str,
    version: str,
    report: Output[HTML],
    run_id: str = "",
):
    """Writes the run's report: the decision and its reason, the data and its contract, fairness,
    tuning, held-out metrics with their CV spread, curves, and the champion comparison.

    The page is self-contained (inline CSS, charts as PNG data URIs, no script, no external URL),
    so it opens offline and renders in the Kubeflow dashboard as an HTML artifact.

    Args:
        dataset: the ingested table; its metadata (source URI, rows, content hash) is shown.
        schema: the schema that validate wrote.
        contract: the data contract; its metadata says whether it was inferred on this run.
        anomalies: the data contract's anomalies (JSON).
        data_bias: the bias step's Markdown report (groups and base rates in the data).
        fairness_data: the fairness step's report data (JSON: gate, tables, charts' numbers),
            rendered as the fairness section with the fairness page's own templates.
        fairness_summary: the fairness step's summary (JSON) with the fairness gate's result.
        best: the tuning result (JSON).
        trials: every tuning trial (CSV).
        evaluation: the held-out evaluation (JSON: metrics, CV spread, curves).
        gate: the champion/challenger decision (JSON: blessed, reason, checks, champion).
        model_name: the model's name in the store.
        version: the version this run registered, for example v2.
        report: the page.
        run_id: the run's id, shown in the page's header (empty: not shown).
    """
    from components.common.io import write_text
    from components.common.step import step_summary, user_errors
    from components.report.logic import (
        RENDER_ERROR_CLASS,
        read_optional_csv,
        read_optional_json,
        read_optional_text,
        render_run_report,
    )

    with user_errors("report"):
        gate_result = read_optional_json(gate.path)
        page = render_run_report(
            model_name=model_name,
            version=version,
            run_id=run_id,
            dataset=dict(dataset.metadata),
            schema=read_optional_json(schema.path),
            anomalies=read_optional_json(anomalies.path),
            contract_inferred=bool(contract.metadata.get("inferred", False)),
            data_bias_markdown=read_optional_text(data_bias.path),
            fairness_data=read_optional_json(fairness_data.path),
            fairness_summary=read_optional_json(fairness_summary.path),
            best=read_optional_json(best.path),
            trials=read_optional_csv(trials.path),
            evaluation=read_optional_json(evaluation.path),
            gate=gate_result,
        )
    write_text(report.path, page)
    undrawn = page.count(f"class='{RENDER_ERROR_CLASS}'")
    if undrawn:
        step_summary("report", f"warning: {undrawn} section(s) could not be drawn (see the page)")
    if gate_result is None:
        decision = "no gate result"
    else:
        # The reason already says blessed or not; the word alone only when there is none.
        decision = gate_result.get("reason") or (
            "blessed" if gate_result.get("blessed") else "not blessed"
        )
    step_summary("report", f"{model_name} {version}: {decision}; page at {report.path}")
