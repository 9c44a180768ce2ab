"""KFP components: bias analysis of the data before training, and the fairness of the model
after evaluation, with the gate that decides whether it may be deployed."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def bias(
    dataset: Input[Dataset],
    schema: Input[Artifact],
    sensitive_columns: list,
    positive_class: str,
    bias_config: dict,
    report: Output[Markdown],
):
    """Per sensitive column (and intersection): group sizes, base rate of the favourable label,
    missing-value rate, and the groups smaller than min_group_size.

    Args:
        dataset: the ingested table (base rates count labelled rows only).
        schema: the schema that validate wrote.
        sensitive_columns: columns to group by.
        positive_class: the favourable class; empty means the second of two sorted classes.
        bias_config: the run config's `bias:` section (components.common.settings.sections.
            BiasConfig): `bands`, band edges of numeric columns, e.g. {"age": [0, 18, 25, 120]}
            (other numeric columns with many values are compared in quartile bands);
            `intersections`, pairs of columns grouped together; `min_group_size`, smaller groups
            are flagged; `max_groups`, a set with more groups is not computable;
            `on_not_computable`, warn (go on, list it in the report) or fail.
        report: Markdown tables, one per set (rendered in the Kubeflow dashboard).
    """
    from components.bias.assess import assess_data
    from components.bias.report import data_markdown
    from components.common.io import read_frame, read_json, write_text
    from components.common.settings.parse import parse_section
    from components.common.settings.sections import BiasConfig
    from components.common.step import step_summary, user_errors

    with user_errors("bias"):
        settings = parse_section(BiasConfig, bias_config, "bias")
    table_schema = read_json(schema.path)
    frame = read_frame(dataset.path)
    with user_errors("bias"):
        tables, notes = assess_data(
            frame, table_schema, sensitive_columns, positive_class, settings
        )
    write_text(report.path, data_markdown(tables, notes, settings.min_group_size))
    for name, table in tables.items():
        small = int(table["small"].sum())
        step_summary(
            "bias",
            f"{name}: {len(table)} groups, base rate {table['base_rate'].min():.3f}"
            f"-{table['base_rate'].max():.3f}" + (f", {small} small" if small else ""),
        )
    for note in notes:
        step_summary("bias", f"note: {note}")


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def fairness(
    model: Input[Model],
    baseline: Input[Model],
    test: Input[Dataset],
    schema: Input[Artifact],
    sensitive_columns: list,
    positive_class: str,
    bias_config: dict,
    split_config: dict,
    metrics: Output[Metrics],
    report: Output[HTML],
    tables: Output[Markdown],
    summary: Output[Artifact],
    report_data: Output[Artifact],
) -> bool:
    """Fairness of the model on the held-out rows, and the gate that decides deployment.

    Per sensitive column (and intersection): selection rate, accuracy, precision, TPR and FPR per
    group (MAE for regression) with bootstrap intervals; demographic parity difference and ratio,
    the disparate impact ratio, equalized odds and equal opportunity differences. The gate checks
    the thresholds: the step succeeds either way, and returns False when a blocking threshold is
    broken, so that the pipeline skips deployment.

    The result is the component's single output ("Output"), not a named one: kfp.local (2.17)
    resolves a dsl.If on `task.output` but not on a named output of a NamedTuple, where it
    silently takes the branch as false. The gate's one-line reason is in `summary` and in the
    step's log.

    Args:
        model: the served model.
        baseline: the model without mitigation (the same model when mitigation is none).
        test: the held-out rows.
        schema: the schema that validate wrote.
        sensitive_columns: columns to group by.
        positive_class: the favourable class; empty means the second of two sorted classes.
        bias_config: the run config's `bias:` section (BiasConfig): `bands`, `intersections`,
            `min_group_size` (smaller groups are shown but left out of the summary metrics),
            `max_groups`, `bootstrap` (samples for the 95% intervals; 0: none), `thresholds`
            ([{metric, threshold, direction, blocking, columns}]: the gate), `mitigation` (the
            one train applied; none: no before/after table), `on_not_computable`.
        split_config: the run config's `split:` section; its `seed` seeds the bootstrap.
        metrics: every summary metric as `<metric>_<column>`, and fairness_passed.
        report: a self-contained HTML page with the tables and charts.
        tables: the same tables in Markdown (the local run's report.md).
        summary: the gate's result ({"gate": {"passed", "reason", "findings"}, ...}) and the
            summary metrics (JSON).
        report_data: what `report` shows, as data (JSON: the gate, the tables, the charts'
            numbers); the run report renders its fairness section from it.

    Returns:
        Whether the model passed the gate (no blocking threshold broken).
    """
    import joblib

    from components.bias.assess import assess_model
    from components.bias.report import data_html, fairness_data, model_markdown
    from components.common.io import read_frame, read_json, write_json, write_text
    from components.common.settings.parse import parse_section
    from components.common.settings.prepare import parse_split_options
    from components.common.settings.sections import BiasConfig
    from components.common.step import step_summary, user_errors

    with user_errors("fairness"):
        settings = parse_section(BiasConfig, bias_config, "bias")
        seed = parse_split_options(split_config).seed
    mitigation = settings.mitigation
    served = joblib.load(model.path)
    unmitigated = joblib.load(baseline.path) if mitigation != "none" else None
    with user_errors("fairness"):
        result = assess_model(
            served,
            read_frame(test.path),
            read_json(schema.path),
            sensitive_columns,
            positive_class,
            settings,
            seed,
            baseline=unmitigated,
        )
    for name, value in result.kfp_metrics().items():
        metrics.log_metric(name, value)
    extra = (result.problems, mitigation, result.before, result.accuracy)
    page_data = fairness_data(result.results, result.gate, *extra)
    write_json(report_data.path, page_data)
    write_text(report.path, data_html(page_data))
    write_text(tables.path, model_markdown(result.results, result.gate, *extra))
    write_json(summary.path, result.as_dict())
    for note in result.problems:
        step_summary("fairness", f"not computable: {note}")
    if result.accuracy:
        before, after = result.accuracy
        step_summary(
            "fairness",
            f"{mitigation}: accuracy {before:.4f} -> {after:.4f} ({after - before:+.4f})",
        )
    step_summary("fairness", result.gate.reason)
    return result.gate.passed
