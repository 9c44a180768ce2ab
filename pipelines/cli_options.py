"""Options that several `mlpipe` commands share. Kept apart from pipelines.config, which loads
pydantic: `mlpipe --help` builds every parser and must stay quick (benchmarks/cli_startup.py)."""


def add_set_option(parser, example: str = "tuning.num_trials=4") -> None:
    """A command's repeatable `--set KEY=VALUE`, which `apply_overrides` lays over the config."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config key, e.g. --set {example} (the value is YAML)",
    )
