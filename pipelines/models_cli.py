"""`mlpipe models`: the registry from the command line (list, show, diff, promote, rollback)."""

import argparse
import json

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from components.common.errors import PipelineInputError

console = Console(highlight=False, soft_wrap=True)
# `models show` prints the version's metadata as JSON on stdout (for jq and scripts) and the
# summary of its training reference, for a person, here.
summary_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _registry(args):
    """The registry the arguments name. Imported here, not at the top: `mlpipe --help` does not
    need fsspec."""
    from components.common.registry import ModelRegistry

    store, name = args.store, args.name
    if args.config:
        from pipelines.config import load_store_keys

        keys = load_store_keys(args.config)
        store = store or keys.model_store_uri
        name = name or keys.model_name
    if not store or not name:
        raise PipelineInputError("mlpipe models: give --config, or both --store and --name")
    return ModelRegistry(store, name)


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else escape(str(value))


# A table's key columns (version, aliases, created, blessed; a diff's keys) never shrink: rich
# narrows only the columns that may wrap (metrics, the gate's reason, diff values). The gate's
# reason gets a column when there is room for it, else it is listed under the table.
REASON_MIN_WIDTH = 30
VALUE_MIN_WIDTH = 8


def _created(meta: dict) -> str:
    """The creation time in UTC to the minute: 2026-11-23 19:30."""
    created = str(meta.get("created", ""))
    return created.replace("T", " ")[:16] if created else ""


def _listed_metrics(meta: dict) -> str:
    """The metrics the gate compared (else the first two), one a line."""
    gate = meta.get("gate") or {}
    metrics = meta.get("metrics") or {}
    compared = [c["name"].split(" ")[0] for c in gate.get("checks", []) if c["kind"] != "fairness"]
    names = [n for n in dict.fromkeys(compared) if n in metrics] or list(metrics)[:2]
    return "\n".join(f"{n}={metrics[n]:.4f}" for n in names)


def _list_table(title: str, rows: list[list[str]], reasons: list[str] | None) -> Table:
    table = Table(title=title)
    for column in ("version", "aliases", "created (UTC)", "blessed"):
        table.add_column(column, no_wrap=True)
    table.add_column("metrics", overflow="fold")
    if reasons is not None:
        table.add_column("reason", overflow="fold")
    for index, row in enumerate(rows):
        table.add_row(*row, *([reasons[index]] if reasons is not None else []))
    return table


def cmd_list(args) -> int:
    registry = _registry(args)
    versions = registry.versions()
    if not versions:
        console.print(f"No versions of {registry.name} in {registry.store_uri}.")
        return 0
    aliases = registry.aliases()
    rows, reasons = [], []
    for version in versions:
        meta = registry.metadata(version)
        gate = meta.get("gate") or {}
        rows.append(
            [
                version,
                "\n".join(a for a, v in aliases.items() if v == version),
                _created(meta),
                {True: "yes", False: "no"}.get(gate.get("blessed"), ""),
                _listed_metrics(meta),
            ]
        )
        reasons.append(escape(str(gate.get("reason") or "")))
    title = escape(f"{registry.name} in {registry.store_uri}")
    table = _list_table(title, rows, None)
    # What the key columns and metrics leave for a reason column, less its padding and border.
    room = console.width - console.measure(table).maximum - 3
    if room >= REASON_MIN_WIDTH:
        console.print(_list_table(title, rows, reasons), soft_wrap=False)
        return 0
    console.print(table, soft_wrap=False)
    if any(reasons):
        below = Table.grid(padding=(0, 2))
        below.add_column(no_wrap=True)
        below.add_column(overflow="fold")
        for version, reason in zip(versions, reasons, strict=True):
            if reason:
                below.add_row(version, reason)
        console.print("gate reasons", soft_wrap=False)
        console.print(below, soft_wrap=False)
    return 0


def cmd_show(args) -> int:
    registry = _registry(args)
    version = registry.resolve(args.version)
    metadata = registry.metadata(version)
    console.print_json(json.dumps(metadata, default=str))
    for part in _reference_summary(registry, version, metadata):
        summary_console.print(part, soft_wrap=False)
    return 0


def _share(value: float) -> str:
    return f"{100 * value:.1f}%"


def _reference_summary(registry, version: str, metadata: dict) -> list:
    """What `models show` prints about the version's training reference: its rows, the features
    profiled, each held-out metric with its interval, the prediction distribution, its size."""
    record = metadata.get("reference") or {}
    reference = registry.reference(version)
    title = f"training reference of {registry.name} {version}"
    if reference is None:
        why = "registered before references were stored"
        if record.get("stored") is False:
            why = str(record.get("reason") or "it was not stored")
        return [escape(title), escape(f"no reference ({why})")]
    from components.common.reference import reference_json

    size = record.get("bytes") or len(reference_json(reference))
    features = reference["profile"]["features"].values()
    numeric = sum(1 for summary in features if summary["kind"] == "numeric")
    rows = reference["rows"]
    lines = Table.grid(padding=(0, 2))
    lines.add_column(no_wrap=True)
    lines.add_column(overflow="fold")
    lines.add_row("rows", f"{rows['train']:,} train, {rows['test']:,} test (held out)")
    lines.add_row(
        "features", f"{numeric} numeric, {len(features) - numeric} categorical (training rows)"
    )
    if reference.get("positive_class") is not None:
        threshold = reference.get("threshold")
        at = f", threshold {threshold:.4g}" if threshold is not None else ""
        lines.add_row("positive", escape(f"{reference['positive_class']}{at}"))
    lines.add_row("predictions", escape(_prediction_distribution(reference)))
    lines.add_row("file", f"reference.json, {size / 1024:.1f} KB (checksum verified)")
    parts = [escape(title), lines]
    if reference["metrics"]:
        level = next(iter(reference["metrics"].values()))["level"]
        table = Table(title=f"held-out metrics, {100 * level:.0f}% bootstrap interval")
        table.add_column("metric", no_wrap=True)
        table.add_column("value", no_wrap=True, justify="right")
        table.add_column("interval", no_wrap=True)
        for name, metric in reference["metrics"].items():
            low, high = metric["low"], metric["high"]
            interval = f"{low:.4f} to {high:.4f}" if low is not None and high is not None else ""
            table.add_row(escape(name), _number(metric["value"]) or "undefined", interval)
        parts.append(table)
    return parts


def _prediction_distribution(reference: dict) -> str:
    """Class shares of the held-out predictions, or a regression's quantiles."""
    prediction = reference["profile"]["outputs"].get("prediction")
    if prediction is None:
        return "not profiled"
    if prediction["kind"] == "categorical":
        shares = sorted(prediction["shares"].items(), key=lambda item: -item[1])
        text = ", ".join(f"{label} {_share(share)}" for label, share in shares)
        if prediction["other_share"]:
            text += f", others {_share(prediction['other_share'])}"
        return text
    import numpy as np

    # From the stored sample: the profile keeps decile edges only where they differ.
    p10, p50, p90 = np.quantile(np.asarray(prediction["sample"], dtype=float), [0.1, 0.5, 0.9])
    return (
        f"min {prediction['min']:.4g}, p10 {p10:.4g}, median {p50:.4g}, p90 {p90:.4g}, "
        f"max {prediction['max']:.4g}"
    )


def cmd_diff(args) -> int:
    registry = _registry(args)
    first, second = registry.resolve(args.first), registry.resolve(args.second)
    differences = registry.diff(first, second)
    for section, rows in differences.items():
        if not rows:
            continue
        # The keys keep their width (folded only when they would leave the two values less
        # than VALUE_MIN_WIDTH each); the values wrap. 10: three columns' borders and padding.
        longest = max(len(key) for key in [*rows, "key"])
        key_width = max(3, min(longest, console.width - 10 - 2 * VALUE_MIN_WIDTH))
        table = Table(title=section)
        table.add_column("key", width=key_width, overflow="fold")
        for column in (first, second):
            table.add_column(column, overflow="fold")
        for key, (left, right) in rows.items():
            table.add_row(escape(key), _number(left), _number(right))
        console.print(table, soft_wrap=False)
    if not any(differences.values()):
        console.print(f"{first} and {second} have the same metrics, config and data.")
    return 0


def _deploy_settings(args):
    """The config's deploy section for --deploy, checked before any alias moves."""
    from pipelines.config import load_config

    if not args.config:
        raise PipelineInputError("--deploy: give --config, whose deploy section says where")
    deploy = load_config(args.config).deploy
    if deploy.target == "local":
        raise PipelineInputError(
            f"--deploy: deploy.target is local in {args.config}; set kserve or gitops"
        )
    return deploy


def _redeploy(deploy, registry, version: str) -> None:
    """Roll the new champion out as the run config's deploy section says (kserve or gitops)."""
    from components.common.image import SERVING_IMAGE
    from components.deploy.cluster import rollout
    from components.deploy.logic import local_model_folder

    rolled_out = rollout(
        str(local_model_folder(registry.uri(version))),
        deploy.target,
        deploy.namespace,
        deploy.storage_uri,
        SERVING_IMAGE,
        canary_traffic_percent=deploy.canary_traffic_percent,
        gitops_repo=deploy.gitops_repo,
        gitops_path=deploy.gitops_path,
        gitops_branch=deploy.gitops_branch,
        timeout=deploy.timeout_seconds,
    )
    console.print(f"  rolled out {version} by {deploy.target}: {rolled_out}")


def cmd_promote(args) -> int:
    registry = _registry(args)
    deploy = _deploy_settings(args) if args.deploy else None
    before = registry.aliases().get("champion", "none")
    record = registry.promote(args.version, args.reason)
    console.print(f"{registry.name}: champion {before} -> {record['version']}")
    if deploy is not None:
        _redeploy(deploy, registry, record["version"])
    return 0


def cmd_rollback(args) -> int:
    registry = _registry(args)
    deploy = _deploy_settings(args) if args.deploy else None
    before = registry.aliases().get(args.alias, "none")
    record = registry.rollback(args.alias, args.reason)
    console.print(f"{registry.name}: {args.alias} {before} -> {record['version']}")
    if deploy is not None:
        _redeploy(deploy, registry, record["version"])
    return 0


def add_models_parser(commands) -> None:
    models = commands.add_parser("models", help="list, show, diff, promote or roll back versions")
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--config", help="a run config: its model_store and model_name")
    where.add_argument("--store", help="the model store (path, file://, s3://, gs://)")
    where.add_argument("--name", help="the model's name")

    listing = actions.add_parser("list", parents=[where], help="every version, with its aliases")
    listing.set_defaults(handler=cmd_list)
    show = actions.add_parser(
        "show",
        parents=[where],
        help="one version's metadata (JSON) and its training reference's summary (on stderr)",
    )
    show.add_argument("version", help="v3, champion or candidate")
    show.set_defaults(handler=cmd_show)
    diff = actions.add_parser("diff", parents=[where], help="two versions side by side")
    diff.add_argument("first")
    diff.add_argument("second")
    diff.set_defaults(handler=cmd_diff)
    promote = actions.add_parser("promote", parents=[where], help="make a version the champion")
    promote.add_argument("version")
    promote.add_argument("--reason", default="promoted by hand")
    promote.add_argument(
        "--deploy", action="store_true", help="then roll it out by the config's deploy section"
    )
    promote.set_defaults(handler=cmd_promote)
    rollback = actions.add_parser(
        "rollback", parents=[where], help="point an alias back to its previous version"
    )
    rollback.add_argument("--alias", default="champion", choices=("champion", "candidate"))
    rollback.add_argument("--reason", default="rolled back by hand")
    rollback.add_argument(
        "--deploy", action="store_true", help="then roll the champion out by the config's deploy"
    )
    rollback.set_defaults(handler=cmd_rollback)
