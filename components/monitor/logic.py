"""The monitor: a window of new data against the champion's reference, and a decision.

1. the window (components.monitor.window): the prediction log (a time window, or everything after
   the last successful run's watermark) or the lake's partitions added since the champion was
   trained;
2. drift (components.common.drift.compare): per feature PSI and a two-sample test, corrected for
   the number of features (Benjamini-Hochberg), a feature drifting only when both the test and
   the effect size say so; the prediction's and probabilities' drift;
3. performance: with labels, the realized metric with its bootstrap interval; without labels
   (classification with probabilities), the confidence-based estimate; both against the
   champion's held-out metric and interval, overall and per day;
4. the decision: `retrain` when any `monitoring.retrain` rule is met, else `warn` when any
   `monitoring.warn` rule is, else `ok`; a window below `min_rows` is `ok` with "not enough data"
   (no verdict on drift or performance), never an alarm;
5. the outputs: monitor.json and monitor.html, written whole under
   `<state>/<model>/runs/<UTC time>/`; then an alert for `warn` or `retrain` (an undelivered one
   is a report entry); then, and only then, the watermark moves.

An empty window is bad input (one line naming the log and the window, exit 2), not a decision:
a schedule that finds no traffic says so, and the watermark stays where it was.
"""

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import fsspec

from components.common.drift import compare
from components.common.errors import PipelineInputError
from components.common.io import json_ready
from components.common.registry import ModelRegistry
from components.common.settings.sections import EvaluationConfig, MonitoringConfig
from components.monitor.decision import (
    BOOTSTRAP,
    RETRAIN,
    WARN,
    daily_performance,
    decide,
    metric_drop,
    performance,
    restricted_profile,
    watched_metric,
)
from components.monitor.window import (
    LABEL_COLUMN,
    check_features,
    filesystem,
    lake_window,
    log_features,
    log_window,
    write_watermark,
)

RESULT_FILE = "monitor.json"
REPORT_FILE = "monitor.html"
RUNS_DIR = "runs"


@dataclass
class MonitorRun:
    """A finished monitor run: its result and where it is."""

    result: dict
    folder: str
    json_path: str
    html_path: str
    html: str

    @property
    def decision(self) -> str:
        return self.result["decision"]


def champion_reference(registry: ModelRegistry) -> tuple[str, dict, dict]:
    """The champion's version, metadata and reference.

    Raises:
        PipelineInputError: no champion, or a champion registered before references existed.
    """
    if registry.alias("champion") is None:
        raise PipelineInputError(
            f"model '{registry.name}' has no champion in {registry.store_uri}: nothing to "
            "monitor yet (train and promote one with `mlpipe run`)"
        )
    version = registry.resolve("champion")
    metadata = registry.metadata(version)
    reference = registry.reference(version)
    where = f"model '{registry.name}' {version}"
    if reference is None:
        raise PipelineInputError(
            f"{where} has no reference.json (registered before references existed): "
            "train a new version to monitor it"
        )
    if not isinstance(reference.get("profile"), dict):
        raise PipelineInputError(f"{where}: reference.json key 'profile' is missing")
    return version, metadata, reference


def monitor(
    model_name: str,
    model_store_uri: str,
    monitoring: dict,
    evaluation: dict,
    serving: dict,
    data: dict,
    alerts: dict,
    state_uri: str,
    positive_class: str = "",
    now: datetime | None = None,
    environ=None,
) -> MonitorRun:
    """Monitor the champion once: read the window, compare, decide, write, alert, move the
    watermark (see the module docstring).

    Args:
        model_name: the model in the store.
        model_store_uri: the model store's root.
        monitoring: the run config's `monitoring:` section (MonitoringConfig).
        evaluation: the `evaluation:` section (its compare_metrics name the default metric).
        serving: the `serving:` section: `prediction_log` and `labels` URIs.
        data: the `data:` section: `source`, the lake (source `lake`).
        alerts: the `alerts:` section (AlertsConfig), for send_alert.
        state_uri: where the watermark and the runs' results are kept.
        positive_class: the positive class of a binary task.
        now: the time of the run (tests); default: now, UTC.
        environ: the environment the alert's webhook URL may come from (tests).

    Returns:
        The run: its result (monitor.json's content) and where it was written.

    Raises:
        PipelineInputError: no champion or reference, an unknown feature in monitoring.features,
            a window without rows, or one that lacks a feature of the champion.
    """
    settings = MonitoringConfig.model_validate(monitoring)
    evaluation_config = EvaluationConfig.model_validate(evaluation)
    if not state_uri:
        raise PipelineInputError(
            "monitoring.state: empty; name where the monitor keeps its watermark and results "
            "(a folder, or on a cluster an s3:// or gs:// URI)"
        )
    now = now or datetime.now(UTC)
    registry = ModelRegistry(model_store_uri, model_name)
    version, metadata, reference = champion_reference(registry)
    where = f"model '{model_name}' {version}"
    profile = restricted_profile(reference["profile"], settings.features, where)
    metric = watched_metric(settings, evaluation_config, reference)
    schema = metadata.get("schema") or {}

    if settings.source == "lake":
        model, _ = registry.load(version)
        window = lake_window(
            data.get("source", ""), (metadata.get("data") or {}).get("watermark"), schema, model
        )
    else:
        window = log_window(
            serving.get("prediction_log", ""),
            serving.get("labels", ""),
            model_name,
            settings.window_days,
            state_uri,
            now,
            version=version,
        )
        window.frame = log_features(window.frame, schema)
    where_read = "prediction log" if window.source == "prediction_log" else "data source"
    expected = [f["name"] for f in schema.get("features") or []] or list(profile["features"])
    check_features(window.frame, [*expected, *profile["features"]], f"{where_read} '{window.uri}'")
    drift = compare(profile, window.frame, settings.alpha, settings.min_psi, settings.min_rows)
    drift_dict = json_ready(drift.to_dict())
    perf, daily = {}, []
    if drift.enough_data:
        perf = json_ready(
            performance(
                window.frame, reference, metric, positive_class, BOOTSTRAP, settings.min_labels
            )
        )
        daily = daily_performance(
            window.frame, reference, metric, positive_class, settings.min_labels
        )
    decision, reasons = decide(drift_dict, perf, reference, metric, settings)
    # The labels say the model is worse, beyond the retrain rule: the relation between the
    # features and the label changed (not only the features' distribution), which
    # retraining.full_on_relation_change answers with a full retraining.
    realized = perf.get("realized") or {}
    reference_metric = (reference.get("metrics") or {}).get(metric) or {}
    drop = (
        metric_drop(realized, reference_metric, metric)
        if realized.get("value") is not None
        else None
    )
    relation_changed = drop is not None and drop > settings.retrain.metric_drop

    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    result = {
        "decision": decision,
        "reasons": reasons,
        "relation_changed": relation_changed,
        "model": {"name": model_name, "version": version},
        "window": {
            "source": window.source,
            "uri": window.uri,
            "description": window.description,
            "rows": len(window.frame),
            "from": _iso(window.first_time),
            "to": _iso(window.last_time),
            "labelled_rows": int(window.frame[LABEL_COLUMN].notna().sum())
            if LABEL_COLUMN in window.frame
            else 0,
            "files_skipped": window.skipped,
        },
        "verdict": drift.verdict,
        "thresholds": {
            "alpha": settings.alpha,
            "min_psi": settings.min_psi,
            "min_rows": settings.min_rows,
            "warn": settings.warn.model_dump(),
            "retrain": settings.retrain.model_dump(),
        },
        "features": [c for c in drift_dict["columns"] if c["role"] == "feature"],
        "prediction_drift": [c for c in drift_dict["columns"] if c["role"] == "output"],
        "drifted": drift_dict["drifted"],
        "performance": {
            "metric": metric,
            "reference": json_ready((reference.get("metrics") or {}).get(metric)),
            **perf,
            "daily": daily,
        },
        "alerts": [],
        "run": stamp,
    }
    if decision in (WARN, RETRAIN):
        result["alerts"].append(_alert(alerts, decision, result, environ))

    from components.monitor.report import monitor_page

    html = monitor_page(result, profile, window.frame)
    folder, json_path, html_path = write_run(state_uri, model_name, stamp, result, html)
    if window.source == "prediction_log" and window.last_time is not None:
        write_watermark(state_uri, model_name, window.last_time, stamp)
    return MonitorRun(result, folder, json_path, html_path, html)


def _iso(moment) -> str | None:
    return None if moment is None else moment.isoformat()


def _alert(settings: dict, decision: str, result: dict, environ) -> str:
    """Send the alert; its outcome's one line, for the report (never raises)."""
    from components.common.alerts import send_alert

    model = result["model"]
    summary = f"{model['name']} {model['version']} is '{decision}': " + "; ".join(result["reasons"])
    fields = {
        "model": model["name"],
        "version": model["version"],
        "decision": decision,
        "rows": result["window"]["rows"],
        "drifted": result["drifted"],
        "metric": result["performance"]["metric"],
    }
    outcome = send_alert(settings, f"monitor_{decision}", summary, fields, environ=environ)
    return outcome.line()


def write_run(
    state_uri: str, model_name: str, stamp: str, result: dict, html: str
) -> tuple[str, str, str]:
    """Write monitor.json and monitor.html as one folder under <state>/<model>/runs/<stamp>:
    locally a temporary folder renamed into place, on an object store each file one PUT (the
    JSON last, so that a folder with monitor.json is whole)."""
    fs, root = filesystem(state_uri)
    runs = f"{root}/{model_name}/{RUNS_DIR}"
    # The time orders the folders; the suffix keeps two runs in the same microsecond (two
    # schedules, a retried pod) from writing into one folder.
    name = f"{stamp}-{uuid.uuid4().hex[:8]}"
    folder = f"{runs}/{name}"
    payload = json.dumps(result, indent=2, sort_keys=False)
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        staging = Path(runs) / f".{name}.tmp"
        staging.mkdir(parents=True, exist_ok=True)
        (staging / REPORT_FILE).write_text(html, encoding="utf-8")
        (staging / RESULT_FILE).write_text(payload, encoding="utf-8")
        staging.replace(folder)
    else:
        fs.pipe_file(f"{folder}/{REPORT_FILE}", html.encode("utf-8"))
        fs.pipe_file(f"{folder}/{RESULT_FILE}", payload.encode("utf-8"))
    return folder, f"{folder}/{RESULT_FILE}", f"{folder}/{REPORT_FILE}"
