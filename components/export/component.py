"""KFP component: export the served model to ONNX and check it against scikit-learn."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def export_onnx_model(
    model: Input[Model],
    test: Input[Dataset],
    schema: Input[Artifact],
    onnx_model: Output[Model],
    parity: Output[Artifact],
    report: Output[Markdown],
):
    """Exports the whole fitted pipeline (preprocessing and model) to ONNX for edge clients, and
    checks it on every held-out row: identical labels, probabilities within 1e-5.

    A model that cannot be converted (a bias-mitigated one, a step without a converter) is
    skipped with its reason, and the run goes on. An export that answers differently from
    scikit-learn fails the step, naming the first row that differs.

    Args:
        model: the served model from train (joblib).
        test: the held-out rows.
        schema: the schema that validate wrote.
        onnx_model: the ONNX file; zero bytes, with metadata converted=False, when skipped (a
            cluster's launcher uploads every output file, so the file always exists).
        parity: JSON: {"converted": false, "reason"}, or the parity check (passed, rows,
            label_mismatches, max_abs_diff, differing_rows, ...).
        report: Markdown for the dashboard.
    """
    import joblib

    from components.common.errors import PipelineInputError
    from components.common.io import read_frame, read_json, write_json, write_text
    from components.common.onnx_runtime import parity_failure_message
    from components.common.step import step_summary, user_errors
    from components.export.logic import (
        TARGET_OPSET,
        NotConvertible,
        export_checked,
        export_report_markdown,
        write_bytes,
    )

    fitted = joblib.load(model.path)
    table_schema = read_json(schema.path)
    test_frame = read_frame(test.path)
    with user_errors("export"):
        try:
            data, result = export_checked(fitted, table_schema, test_frame)
        except NotConvertible as error:
            result = {
                "converted": False,
                "reason": error.reason,
                "step": error.step,
                "class": error.class_name,
            }
            write_bytes(onnx_model.path, b"")
            onnx_model.metadata.update({"framework": "onnx", "converted": False})
            onnx_model.metadata["reason"] = error.reason
            write_json(parity.path, result)
            write_text(report.path, export_report_markdown(result))
            step_summary("export", f"skipped: {error.reason}")
            return
        result["opset"] = TARGET_OPSET[""]
        result["bytes"] = len(data)
        write_bytes(onnx_model.path, data)
        onnx_model.metadata.update(
            {
                "framework": "onnx",
                "converted": True,
                "opset": TARGET_OPSET[""],
                "parity_passed": result["passed"],
                "max_abs_diff": result["max_abs_diff"],
            }
        )
        write_json(parity.path, result)
        write_text(report.path, export_report_markdown(result))
        if not result["passed"]:
            raise PipelineInputError(parity_failure_message(result))
    step_summary(
        "export",
        f"ONNX {len(data):,} bytes, parity passed on {result['rows']} test rows "
        f"(largest difference {result['max_abs_diff']:.2g})",
    )
