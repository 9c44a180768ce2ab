"""The run config's sections, one pydantic model each: the same model checks a section when
the config is loaded (pipelines.config) and again inside the step that receives it as its one
parameter, so a section's keys, types, bounds and defaults are written once.

Plain data and checks, importing no ML library: loading a config stays fast.
"""

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from components.common.errors import PipelineInputError
from components.common.families import check_space_overrides
from components.common.settings.etl import EtlSpec
from components.common.settings.prepare import PrepareOptions, SplitOptions
from components.common.vocabulary import (
    CLASSIFICATION_METRICS,
    CONSTRAINTS,
    MITIGATIONS,
    REGRESSION_METRICS,
    SUMMARY_METRICS,
    THRESHOLD_CONSTRAINTS,
    THRESHOLD_RULES,
    default_direction,
)


class _Section(BaseModel):
    # defer_build: a model is compiled when it first checks a value, not when it is imported,
    # so a command that reads a few keys (mlpipe models) does not pay for every section.
    model_config = ConfigDict(extra="forbid", defer_build=True)


class DataConfig(_Section):
    source: str = Field(
        "",
        description="A Parquet lake folder (Hive-partitioned), a Parquet or CSV file: a path, "
        "file://, s3:// or gs:// URI. Leave empty when `etl` names the source.",
    )
    etl: EtlSpec | None = Field(
        None,
        description="An ETL snapshot instead of a live source: extract (file or SQL), declared "
        "transforms, an immutable content-addressed Parquet snapshot.",
    )
    snapshot_root: str = Field(
        "",
        description="Where ETL snapshots are kept (a local folder); empty: <output_root>/snapshots.",
    )
    na_values: list[str] = Field(
        default_factory=list, description="Extra missing-value markers in CSV."
    )
    columns: list[str] = Field(default_factory=list, description="Read only these columns.")
    filters: list[tuple[str, Literal["==", "!=", "<", "<=", ">", ">=", "in", "not in"], Any]] = (
        Field(default_factory=list, description="Rows to keep: [column, operator, value].")
    )
    since_watermark: str = Field(
        "", description="A watermark JSON file from an earlier run: read only what is new since."
    )


class ContractConfig(_Section):
    path: str = Field(
        "", description="A reviewed contract (YAML or JSON); empty: infer one from this run's data."
    )
    severity: dict[
        Literal[
            "missing_column",
            "new_column",
            "type_change",
            "out_of_range",
            "unseen_category",
            "null_rate",
            "too_few_rows",
        ],
        Literal["block", "warn"],
    ] = Field(default_factory=dict)
    unseen_category_rate: float = Field(0.0, ge=0, le=1)
    null_rate_margin: float = Field(0.0, ge=0, le=1)


class TuningConfig(_Section):
    families: list[str] = Field(
        default_factory=lambda: ["logistic_regression", "random_forest", "hist_gradient_boosting"]
    )
    num_trials: int = Field(16, ge=1, le=10_000)
    cv_folds: int = Field(3, ge=2, le=20)
    metric: str = Field("", description="A scikit-learn scorer name; empty picks one for the task.")
    search: Literal["random", "tpe"] = Field("random", description="tpe: Optuna's TPE.")
    scheduler: Literal["fifo", "asha"] = Field(
        "fifo", description="asha stops bad trials early, on boosting rounds or forest trees."
    )
    space: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per family, per hyperparameter: {uniform|loguniform|randint: [low, high]}, "
        "{choice: [...]} or a fixed value; replaces that entry of the default space.",
    )
    max_failures: int = Field(2, ge=0, le=100, description="Retries of a trial whose worker died.")

    @field_validator("space", mode="before")
    @classmethod
    def _space_from_text(cls, space):
        # The pipeline parameter carries the space as JSON text: a KFP dict parameter turns
        # every number into a float, and max_depth: 2 would reach scikit-learn as 2.0.
        return json.loads(space) if isinstance(space, str) else space

    @field_validator("space")
    @classmethod
    def _check_space(cls, space: dict) -> dict:
        try:
            check_space_overrides(space)
        except PipelineInputError as error:
            raise PydanticCustomError("search_space", str(error)) from None
        return space


class RayConfig(_Section):
    num_cpus: int = Field(2, ge=1, le=1024)
    address: str = Field(
        "",
        description="An existing Ray cluster's GCS address (host:6379); empty: RAY_ADDRESS in the "
        "tune step's environment, else an embedded Ray on 127.0.0.1.",
    )
    storage_path: str = Field(
        "",
        description="Where Tune keeps the experiment, shared by every node (s3://... on a "
        "cluster); a rerun on the same inputs resumes it. Empty: MLPIPE_TUNE_STORAGE_PATH, else "
        "a temporary folder.",
    )
    connect_timeout_seconds: int = Field(30, ge=1, le=3600)


class EvaluationConfig(_Section):
    """Evaluation and the champion/challenger gate (components/evaluate)."""

    threshold_rule: Literal[THRESHOLD_RULES] = Field(
        "fixed",
        description="Binary tasks: fixed (`threshold`), max_f1 or target_precision, chosen on "
        "the training split's out-of-fold probabilities.",
    )
    threshold: float = Field(0.5, gt=0, lt=1, description="The fixed rule's threshold.")
    target_precision: float = Field(0.9, gt=0, le=1)
    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Absolute bounds a model must meet to be deployed, e.g. {roc_auc: 0.85}; "
        "at least the bound, at most for losses (log_loss, brier, mse, rmse, mae).",
    )
    compare_metrics: list[str] = Field(
        default_factory=list,
        description="Metrics compared with the champion; empty: roc_auc, roc_auc_ovr or r2.",
    )
    margin: float = Field(
        0.01, ge=0, description="How much worse than the champion a new model may be."
    )


class ServingConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    smoke_rows: int = Field(5, ge=1, le=10_000)
    log_predictions: bool = Field(
        True, description="The server writes every answered prediction to the prediction log."
    )
    prediction_log: str = Field(
        "",
        description="The prediction log lake (a folder, s3://, gs://); empty: "
        "<output_root>/predictions.",
    )
    labels: str = Field(
        "",
        description="The labels lake that `mlpipe feedback` and POST /admin/labels append "
        "to; empty: <output_root>/labels.",
    )


class PredictConfig(_Section):
    """Batch predictions (`mlpipe predict`, the batch-prediction pipeline: components/predict)."""

    key_columns: list[str] = Field(
        default_factory=list,
        description="The input's columns that identify a row, copied into the scored output "
        "beside the prediction (e.g. [customer_id]); each must be in the input.",
    )
    output: str = Field(
        "",
        description="The scored lake (a folder, s3://, gs://); each job writes its own partition "
        "job=<id>/. Empty: <output_root>/batch-predictions.",
    )
    since_last_job: bool = Field(
        False,
        description="Score only the input's files new or changed since the last job that "
        "wrote to this output (its watermark is kept in the output's _watermark.json).",
    )
    engine: Literal["auto", "local", "ray"] = Field(
        "auto",
        description="local: Arrow record batches in this process; ray: Ray Data "
        "(ray.address, else an embedded Ray on 127.0.0.1); auto: ray when ray.address is set.",
    )
    runtime: Literal["auto", "onnx", "sklearn"] = Field(
        "auto",
        description="auto: the ONNX graph when the version has one whose parity check passed, "
        "else scikit-learn.",
    )
    batch_rows: int = Field(
        65_536, ge=1, le=10_000_000, description="Rows per record batch: what memory holds."
    )
    log_predictions: bool = Field(
        True,
        description="Also write the scored rows to the prediction log (serving.prediction_log).",
    )


class DriftRule(_Section):
    """When a monitor result is `warn` or `retrain`: any one of these met is enough."""

    drifted_features: int = Field(
        1, ge=0, description="At least this many features drifted (0: never on drift alone)."
    )
    prediction_drift: bool = Field(True, description="The prediction's distribution drifted.")
    metric_drop: float = Field(
        0.02,
        ge=0,
        description="The metric is below the reference's by more than this, beyond "
        "both intervals (realized with labels, else estimated).",
    )


# The retrain rule's defaults: stricter than warn's, and never on prediction drift alone.
RETRAIN_RULE_DEFAULTS = {"drifted_features": 3, "prediction_drift": False, "metric_drop": 0.05}


class MonitoringConfig(_Section):
    source: Literal["prediction_log", "lake"] = Field(
        "prediction_log",
        description="prediction_log: the served requests; lake: the data "
        "source's partitions added since the champion's training watermark.",
    )
    window_days: float = Field(
        0, ge=0, description="The last N days of the log; 0: everything since the last monitor run."
    )
    features: list[str] = Field(
        default_factory=list, description="The features compared; empty: all of the reference's."
    )
    min_rows: int = Field(200, ge=1, description="A smaller window gets 'not enough data'.")
    min_labels: int = Field(
        100, ge=1, description="Fewer labelled rows give no realized metric (the estimate is used)."
    )
    alpha: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="The false-discovery rate across features (Benjamini-Hochberg).",
    )
    min_psi: float = Field(
        0.1, ge=0, description="The smallest population stability index that counts as drift."
    )
    metric: str = Field(
        "", description="The metric watched; empty: the first of evaluation.compare_metrics."
    )
    warn: DriftRule = Field(
        default_factory=DriftRule, description="When the result is at least `warn`."
    )
    retrain: DriftRule = Field(
        default_factory=lambda: DriftRule(**RETRAIN_RULE_DEFAULTS),
        description="When the result is `retrain` (wins over warn); a key left out takes "
        "the retrain rule's own default, not warn's.",
    )
    state: str = Field(
        "",
        description="Where the monitor keeps its watermark and results; empty: "
        "<output_root>/monitoring.",
    )

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        known = CLASSIFICATION_METRICS + REGRESSION_METRICS
        if value and value not in known:
            raise PydanticCustomError(
                "metric",
                "'{metric}' is not a metric evaluation reports (one of: {known})",
                {"metric": value, "known": ", ".join(known)},
            )
        return value

    @field_validator("retrain", mode="before")
    @classmethod
    def _retrain_defaults(cls, value):
        # `retrain: {drifted_features: 5}` must not inherit warn's prediction_drift: true.
        if isinstance(value, dict):
            return {**RETRAIN_RULE_DEFAULTS, **value}
        return value


RETRAINING_MODES = ("incremental", "full")


class RetrainingConfig(_Section):
    mode: Literal[RETRAINING_MODES] = Field(
        "incremental",
        description="What the monitor's `retrain` decision (or a schedule) starts: incremental "
        "updates the champion with the data new since its watermark; full trains on all data "
        "with a search, as `mlpipe run` does.",
    )
    full_every: int = Field(
        5,
        ge=0,
        le=1000,
        description="After this many incremental versions in a row, the next retraining is "
        "full (0: never).",
    )
    full_on_relation_change: bool = Field(
        True,
        description="Full when the monitor found the label relation changed (the realized "
        "metric dropped by more than monitoring.retrain.metric_drop).",
    )
    epochs: int = Field(
        10,
        ge=1,
        le=1000,
        description="Passes of partial_fit over the new rows (the sgd_linear family): one pass "
        "barely moves a model that has seen many rows.",
    )
    window_partitions: int = Field(
        3,
        ge=0,
        le=10_000,
        description="Families without partial_fit or warm_start refit the champion's recipe "
        "on the lake's last N partitions (plus the labelled log); 0: they cannot update.",
    )
    fallback: Literal["full", "refuse"] = Field(
        "full",
        description="When the champion's family cannot update incrementally: retrain in full "
        "(and say so), or refuse.",
    )
    include_prediction_log: bool = Field(
        True,
        description="Add the prediction log's labelled rows, answered since the champion was "
        "registered, to the new data.",
    )


ALERT_EVENTS = (
    "monitor_warn",
    "monitor_retrain",
    "training_failed",
    "fairness_blocked",
    "new_champion",
)


class AlertsConfig(_Section):
    webhook_url: str = Field(
        "",
        description="An http(s) URL that receives each alert as a JSON POST (Slack-compatible "
        "`text`); empty: alerts go to the log only. A URL that holds a token: webhook_url_env.",
    )
    webhook_url_env: str = Field(
        "MLPIPE_ALERT_WEBHOOK_URL",
        description="The environment variable (on a cluster, from a "
        "Secret) whose URL is used instead when it is set.",
    )
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    retries: int = Field(3, ge=0, le=10, description="Attempts after the first, with backoff.")
    events: list[Literal[ALERT_EVENTS]] = Field(
        default_factory=lambda: list(ALERT_EVENTS), description="The events that alert."
    )

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise PydanticCustomError(
                "webhook_url", "not an http(s) URL: '{shown}'", {"shown": value.split("?")[0][:80]}
            )
        return value


class DeployConfig(_Section):
    target: Literal["local", "kserve", "gitops"] = Field(
        "local",
        description="local: smoke-test only; kserve: apply an InferenceService; gitops: commit it.",
    )
    namespace: str = "mlpipe"
    storage_uri: str = Field(
        "", description="The model store as KServe reads it: s3://…, gs://… or pvc://claim/…"
    )
    canary_traffic_percent: int = Field(0, ge=0, le=99)
    gitops_repo: str = ""
    gitops_path: str = "apps/mlpipe"
    gitops_branch: str = "main"
    timeout_seconds: int = Field(600, ge=1)


class FairnessThreshold(_Section):
    metric: Literal[SUMMARY_METRICS] = Field(description="A summary metric of the fairness step.")
    threshold: float
    direction: Literal["at_least", "at_most"] | None = Field(
        None, description="at_least (value >= threshold) or at_most; default by the metric."
    )
    blocking: bool = Field(True, description="true: a breach stops deployment; false: a warning.")
    columns: list[str] = Field(
        default_factory=list,
        description="Sensitive columns or 'a_x_b' intersections; all if empty.",
    )


class BiasConfig(_Section):
    """Bias analysis, the fairness gate and mitigation (components/bias)."""

    bands: dict[str, list[float]] = Field(
        default_factory=dict, description="Band edges of numeric sensitive columns, e.g. age."
    )
    intersections: list[tuple[str, str]] = Field(
        default_factory=list, description="Pairs of sensitive columns to group by together."
    )
    min_group_size: int = Field(30, ge=1, description="Smaller groups are flagged.")
    max_groups: int = Field(50, ge=2, le=10_000, description="More groups: not computable.")
    bootstrap: int = Field(100, ge=0, le=10_000, description="Bootstrap samples for intervals.")
    thresholds: list[FairnessThreshold] = Field(default_factory=list)
    mitigation: Literal[MITIGATIONS] = "none"
    constraint: Literal[CONSTRAINTS] = "demographic_parity"
    mitigate_by: str = Field("", description="The column mitigation balances; empty: the first.")
    on_not_computable: Literal["warn", "fail"] = "warn"

    @field_validator("bands")
    @classmethod
    def _increasing(cls, bands: dict[str, list[float]]) -> dict[str, list[float]]:
        for column, edges in bands.items():
            if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
                raise ValueError(f"bands of '{column}' must be two or more increasing numbers")
        return bands

    @field_validator("intersections")
    @classmethod
    def _pairs(cls, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        for first, second in pairs:
            if first == second:
                raise ValueError(f"an intersection needs two different columns, got {first} twice")
        return pairs

    @field_validator("constraint")
    @classmethod
    def _constraint_fits(cls, constraint: str, info: ValidationInfo) -> str:
        if info.data.get("mitigation") == "threshold_optimizer":
            if constraint not in THRESHOLD_CONSTRAINTS:
                raise ValueError(f"threshold_optimizer takes {', '.join(THRESHOLD_CONSTRAINTS)}")
        return constraint

    def thresholds_as_dicts(self) -> list[dict]:
        """The thresholds as pipeline arguments, each direction spelled out."""
        return [
            {**t.model_dump(), "direction": t.direction or default_direction(t.metric)}
            for t in self.thresholds
        ]


# Every section of the run config that travels to the steps as one pipeline parameter, by its
# key in the run config (and the parameter's name), with the model that checks it.
SECTIONS: dict[str, type[BaseModel]] = {
    "data": DataConfig,
    "contract": ContractConfig,
    "prepare": PrepareOptions,
    "split": SplitOptions,
    "tuning": TuningConfig,
    "ray": RayConfig,
    "bias": BiasConfig,
    "evaluation": EvaluationConfig,
    "serving": ServingConfig,
    "deploy": DeployConfig,
    "monitoring": MonitoringConfig,
    "alerts": AlertsConfig,
    "retraining": RetrainingConfig,
}


def section_defaults(name: str) -> dict:
    """A section's defaults as its pipeline parameter's default: every key (so the run form
    shows them all), nulls left out (a KFP parameter cannot carry them; the model restores them)."""
    return SECTIONS[name]().model_dump(mode="json", exclude_none=True)
