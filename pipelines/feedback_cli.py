"""`mlpipe feedback`: labels that arrive later, checked and appended to the labels lake.

    mlpipe feedback --config run.yaml --labels labels.csv [--skip-invalid]

The file is CSV or Parquet with the columns request_id and label, and row when a request had
several rows (see `components.common.labels`). Each pair is checked against the prediction log
(`serving.prediction_log`), the schema of the model version that answered it (the registry in
`model_store`) and the labels lake (`serving.labels`). Exit 0 when every pair was appended; exit 2
with one line on stderr when any was refused: then nothing is written, unless --skip-invalid,
which appends the valid pairs and still exits 2 naming the others.
"""

from rich.console import Console
from rich.markup import escape

from components.common.errors import PipelineInputError

console = Console(highlight=False, soft_wrap=True)


def cmd_feedback(args) -> int:
    # Imported here, not at the top: `mlpipe --help` does not need pandas or pyarrow.
    from components.common.labels import add_labels, read_labels_file, schemas_from_registry
    from components.common.registry import ModelRegistry
    from pipelines.config import load_config

    config = load_config(args.config)
    pairs = read_labels_file(args.labels)
    registry = ModelRegistry(config.model_store_uri, config.model_name)
    outcome = add_labels(
        pairs,
        labels_uri=config.labels_uri,
        log_uri=config.prediction_log_uri,
        model_name=config.model_name,
        schema_for=schemas_from_registry(registry),
        skip_invalid=args.skip_invalid,
        source=f"labels file {args.labels}",
    )
    for line in outcome.skipped:
        console.print(f"warning: {escape(line)}")
    if outcome.refused:
        if outcome.appended:
            console.print(
                f"appended {outcome.appended:,} of {outcome.pairs:,} labels to "
                f"{escape(str(outcome.path))}"
            )
        raise PipelineInputError(outcome.line(skip_hint="--skip-invalid"))
    console.print(escape(outcome.line()))
    return 0


def add_feedback_parser(commands) -> None:
    feedback = commands.add_parser(
        "feedback", help="append labels that arrived later (request_id,label) to the labels lake"
    )
    feedback.add_argument("--config", required=True, help="the run config YAML")
    feedback.add_argument(
        "--labels", required=True, help="a CSV or Parquet file of request_id, label (and row)"
    )
    feedback.add_argument(
        "--skip-invalid",
        action="store_true",
        help="append the valid pairs when some are refused (still exits 2, naming them)",
    )
    feedback.set_defaults(handler=cmd_feedback)
