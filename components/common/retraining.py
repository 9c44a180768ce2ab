"""Retraining: which kind a run is (full or incremental), and what an incremental one reads.

A training run is `full` (ingest everything, search, fit: what `mlpipe run` does) or
`incremental` (update the champion with what is new since its training watermark: the lake's new
or changed files, and the prediction log's labelled rows answered since it was registered; the
champion's hyperparameters, no search). `plan_training` decides, once, at the start of the run,
and its plan travels to the steps that act on it (ingest, tune, train, register):

- a full run asked for is full;
- an incremental run needs a champion (none: one line, exit 2), a lake watermark in the
  champion's lineage, and a family that can update (components.common.incremental): a family
  that cannot falls back to `full` or is refused, as `retraining.fallback` says; after
  `retraining.full_every` incremental versions in a row, the run is full;
- an incremental run with nothing new to read is `skip`: it says so and registers nothing.

How each family updates (`components.common.update_rules.UPDATE_RULES`): `partial_fit` and
`warm_start` read only the new data; `refit_window` refits the champion's recipe on the lake's
last `retraining.window_partitions` partitions (the plan's watermark leaves those out, so ingest
reads them) plus the labelled log.
"""

import json
from datetime import UTC, datetime
from pathlib import PurePosixPath

import pandas as pd

from components.common.errors import PipelineInputError
from components.common.lake_files import fingerprints
from components.common.prediction_log import (
    FIXED_COLUMNS,
    PREDICTION,
    PROBABILITY_PREFIX,
    RESERVED,
    lake_filesystem,
    read_prediction_log,
)
from components.common.secrets import redact_url
from components.common.settings.parse import parse_section
from components.common.settings.sections import DataConfig, RetrainingConfig, ServingConfig

FULL, INCREMENTAL, SKIP = "full", "incremental", "skip"
TRIGGERS = ("manual", "monitor", "schedule")
# Versions before this field existed were trained in full.
TRAINING_FIELD = "training"


def check_trigger(trigger: str) -> str:
    if trigger not in TRIGGERS:
        raise PipelineInputError(f"trigger: '{trigger}' is not one of {', '.join(TRIGGERS)}")
    return trigger


def incrementals_in_a_row(registry, version: str, limit: int = 1000) -> int:
    """How many incremental versions end the lineage chain at `version` (its parents')."""
    count = 0
    while version and count < limit:
        training = registry.metadata(version).get(TRAINING_FIELD) or {}
        if training.get("mode") != INCREMENTAL:
            break
        count += 1
        version = training.get("parent") or ""
    return count


def partition_of(name: str) -> str:
    """The partition folder of a lake file ("year=2024/month=1"; "" for a file at the root)."""
    parent = str(PurePosixPath(name).parent)
    return "" if parent == "." else parent


def _partitions(names) -> list[str]:
    return sorted({partition_of(name) for name in names})


def _plan(mode: str, requested: str, trigger: str, reason: str, **fields) -> dict:
    return {
        "mode": mode,
        "requested": requested,
        "trigger": trigger,
        "reason": reason,
        "parent": "",
        "family": "",
        "rule": "",
        "since_watermark": "",
        "read_lake": True,
        "watermark": None,
        "partitions_added": [],
        "window": [],
        "log": None,
        **fields,
    }


def plan_training(
    model_store_uri: str,
    model_name: str,
    requested_mode: str,
    trigger: str,
    retraining: dict,
    data: dict,
    serving: dict,
    since_watermark: str = "",
    registry=None,
) -> dict:
    """Decide the run's kind and what it reads (see the module docstring).

    Args:
        model_store_uri, model_name: the registry and the model.
        requested_mode: full or incremental (empty: `retraining.mode`).
        trigger: what started the run: manual, monitor or schedule (recorded in the lineage).
        retraining: the run config's `retraining:` section.
        data: the `data:` section (the lake).
        serving: the `serving:` section (the prediction log and labels).
        since_watermark: a full run's watermark as given (`data.since_watermark`).

    Returns:
        The plan: mode (full, incremental or skip), requested, trigger, reason (one line),
        parent (the champion an incremental run updates), family, rule, since_watermark (JSON
        for ingest), read_lake, watermark (the lake watermark to record when the lake is not
        read), partitions_added, window, log ({uri, labels, since} or None).

    Raises:
        PipelineInputError: incremental with no champion; a family that cannot update with
            `retraining.fallback: refuse`; an unknown mode or trigger.
    """
    from components.common.registry import ModelRegistry
    from components.common.update_rules import IncrementalNotSupported, update_rule

    config = parse_section(RetrainingConfig, retraining, "retraining")
    check_trigger(trigger)
    requested = requested_mode or config.mode
    if requested not in (FULL, INCREMENTAL):
        raise PipelineInputError(f"mode: '{requested}' is not one of full, incremental")
    if requested == FULL:
        return _plan(
            FULL,
            requested,
            trigger,
            "full retraining: all the data, with a search",
            since_watermark=since_watermark,
        )
    registry = registry or ModelRegistry(model_store_uri, model_name)
    parent = registry.aliases().get("champion")
    if parent is None:
        raise PipelineInputError(
            f"retraining.mode incremental: model '{model_name}' has no champion in "
            f"{redact_url(model_store_uri)} to update; train one first (`mlpipe run`)"
        )
    metadata = registry.metadata(parent)

    def fall_back(why: str) -> dict:
        if config.fallback == "refuse":
            raise PipelineInputError(f"retraining: {why}, and retraining.fallback is refuse")
        return _plan(
            FULL,
            requested,
            trigger,
            f"full retraining instead of incremental: {why}",
            parent=parent,
            since_watermark=since_watermark,
        )

    in_a_row = incrementals_in_a_row(registry, parent)
    if config.full_every and in_a_row >= config.full_every:
        return _plan(
            FULL,
            requested,
            trigger,
            f"full retraining: champion {parent} ends {in_a_row} incremental versions in a row "
            f"(retraining.full_every: {config.full_every})",
            parent=parent,
            since_watermark=since_watermark,
        )
    training_watermark = (metadata.get("data") or {}).get("watermark")
    if not isinstance(training_watermark, dict) or "files" not in training_watermark:
        return fall_back(
            f"champion {parent} was trained on a file or a snapshot, not a lake: there is no "
            "watermark to read new data from"
        )

    source = parse_section(DataConfig, data, "data").source
    fs, root, _ = lake_filesystem(source)
    fs.invalidate_cache()
    if not fs.isdir(root):
        return fall_back(
            f"the data source {redact_url(source)} is a file, not a lake folder: a file that "
            "changed is read whole"
        )
    current = fingerprints(fs, root)
    seen = training_watermark["files"]
    added = sorted(name for name, mark in current.items() if seen.get(name) != mark)
    log = None
    log_rows = 0
    if config.include_prediction_log:
        settings = parse_section(ServingConfig, serving, "serving")
        since = metadata.get("created") or ""
        if settings.prediction_log:
            target = (metadata.get("schema") or {}).get("target", "")
            log = {
                "uri": settings.prediction_log,
                "labels": settings.labels,
                "since": since,
                "model": model_name,
                "target": target,
            }
            log_rows = len(labelled_log_rows(log, model_name, target))
            if not log_rows:
                log = None
    family = (metadata.get("tuning") or {}).get("family", "")
    if not added and not log_rows:
        return _plan(
            SKIP,
            requested,
            trigger,
            f"nothing new since champion {parent}'s training watermark ({len(seen)} lake files "
            "read then, no labelled predictions since): nothing to retrain on",
            parent=parent,
            family=family,
        )
    mitigation = ((metadata.get("config") or {}).get("bias") or {}).get("mitigation", "none")
    try:
        rule = update_rule(family)
        if mitigation and mitigation != "none":
            raise IncrementalNotSupported(
                f"champion {parent} is mitigated ({mitigation}), which wraps its estimator"
            )
    except IncrementalNotSupported as error:
        return fall_back(str(error))
    except PipelineInputError:
        return fall_back(f"champion {parent} records no family that can update ('{family}')")
    if rule == "refit_window" and not config.window_partitions:
        return fall_back(
            f"champion {parent} is a {family}, which refits on a window, and "
            "retraining.window_partitions is 0"
        )
    fields = {
        "model_store_uri": model_store_uri,
        "model_name": model_name,
        "parent_tuning": metadata.get("tuning") or {},
        "parent_threshold": metadata.get("threshold"),
        "parent": parent,
        "family": family,
        "rule": rule,
        "partitions_added": _partitions(added),
        "log": log,
        "log_rows": log_rows,
        "incrementals_in_a_row": in_a_row,
        "epochs": config.epochs,
    }
    what = " and ".join(
        part
        for part in (
            f"{len(added)} new lake files" if added else "",
            f"{log_rows} labelled predictions" if log else "",
        )
        if part
    )
    if rule == "refit_window":
        window = _partitions(current)[-config.window_partitions :]
        kept = {name: mark for name, mark in current.items() if partition_of(name) not in window}
        return _plan(
            INCREMENTAL,
            requested,
            trigger,
            f"incremental: {family} refits champion {parent}'s recipe on the last "
            f"{len(window)} partitions ({what})",
            since_watermark=json.dumps({**training_watermark, "files": kept}),
            window=window,
            **fields,
        )
    return _plan(
        INCREMENTAL,
        requested,
        trigger,
        f"incremental: {family} updates champion {parent} by {rule} on {what}",
        since_watermark=json.dumps(training_watermark),
        read_lake=bool(added),
        # When only the log is new, the lake was not read: the new version keeps the
        # champion's lake watermark, so the next update still starts from it.
        watermark=None if added else training_watermark,
        **fields,
    )


def labelled_log_rows(log: dict, model_name: str, target: str) -> pd.DataFrame:
    """The prediction log's rows answered since `log["since"]` that have a label, as training
    rows: the features as received (a feature logged as feature_<name> gets its name back) and
    the label as `target`.

    Args:
        log: {"uri", "labels", "since"} (since: ISO time; empty: the whole log).
        model_name: the model whose partition of the log and labels is read.
        target: the name the label column takes.
    """
    from components.common.labels import attach_labels, read_labels

    since = datetime.fromisoformat(log["since"]) if log.get("since") else None
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    fs, root, _ = lake_filesystem(log["uri"])
    if not fs.exists(f"{root}/model={model_name}"):
        return pd.DataFrame()
    frame, _ = read_prediction_log(log["uri"], model_name, since)
    if since is not None and len(frame):
        frame = frame[pd.to_datetime(frame["time"], utc=True) >= pd.Timestamp(since)]
    labels_fs, labels_root, _ = lake_filesystem(log.get("labels") or "")
    if (
        frame.empty
        or not log.get("labels")
        or not labels_fs.exists(f"{labels_root}/model={model_name}")
    ):
        return pd.DataFrame()
    labels, _ = read_labels(log["labels"], model_name)
    joined = attach_labels(frame.reset_index(drop=True), labels)
    joined = joined[joined["label"].notna()]
    dropped = {*FIXED_COLUMNS, PREDICTION, "model", "date"}
    features = [
        column
        for column in joined.columns
        if column not in dropped and column != "label" and not column.startswith(PROBABILITY_PREFIX)
    ]
    renamed = {
        column: column.removeprefix("feature_")
        for column in features
        if column.startswith("feature_") and column.removeprefix("feature_") in RESERVED
    }
    rows = joined[features].rename(columns=renamed)
    rows[target] = joined["label"].to_numpy()
    return rows.reset_index(drop=True)


def describe(plan: dict) -> str:
    """One line for the step summaries and the loop's output."""
    return f"{plan['reason']} (trigger: {plan['trigger']})"


def training_lineage(plan: dict, details: dict | None = None) -> dict:
    """The metadata.json `training` field: how this version was trained and why."""
    return {
        "mode": plan["mode"],
        "trigger": plan["trigger"],
        "requested": plan["requested"],
        "reason": plan["reason"],
        "parent": plan.get("parent") or None,
        "rule": plan.get("rule") or None,
        "partitions_added": plan.get("partitions_added") or [],
        "window": plan.get("window") or [],
        "log_rows": plan.get("log_rows", 0),
        "update": details or None,
        "planned_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def mode_after_monitor(result: dict, retraining: dict) -> tuple[str, str]:
    """The retraining a monitor's `retrain` decision starts: `retraining.mode`, or full when
    the label relation changed and `retraining.full_on_relation_change` says so.

    Args:
        result: the monitor's result (monitor.json): its decision and `relation_changed`.
        retraining: the run config's `retraining:` section.

    Returns:
        (full or incremental, why), or ("", why) when the decision is not `retrain`.
    """
    config = parse_section(RetrainingConfig, retraining, "retraining")
    if result.get("decision") != "retrain":
        return "", f"the monitor said {result.get('decision')}: no retraining"
    if (
        config.mode == INCREMENTAL
        and config.full_on_relation_change
        and result.get("relation_changed")
    ):
        return FULL, (
            "the labels show the relation changed, and retraining.full_on_relation_change is on"
        )
    return config.mode, f"retraining.mode is {config.mode}"
