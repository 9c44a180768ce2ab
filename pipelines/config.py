"""The run config: one YAML file that names the data, the target, the search and the outputs.

It is checked before anything runs: an unknown key, a wrong type, a data source that does not
exist or a target that is not in the data is one line naming the problem, and nothing is written.
The checked config becomes the pipeline's parameters (pipeline_arguments), which are the only way
configuration reaches the components: each section is one parameter, a dict that the step
receiving it checks with the section's own model (components.common.settings), so a new key is
one field in one model, plus the code that uses it.
"""

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from components.common.errors import PipelineInputError
from components.common.families import check_families, check_metric
from components.common.registry import check_model_name, version_storage_uri
from components.common.secrets import find_url_with_password, redact_url, redacted
from components.common.settings.contract import check_contract_format
from components.common.settings.prepare import PrepareOptions, SplitOptions
from components.common.settings.resources import ResourcesConfig
from components.common.settings.sections import (
    AlertsConfig,
    BiasConfig,
    ContractConfig,
    DataConfig,
    DeployConfig,
    EvaluationConfig,
    MonitoringConfig,
    PredictConfig,
    RayConfig,
    RetrainingConfig,
    ServingConfig,
    TuningConfig,
    _Section,
)
from components.common.vocabulary import (
    CLASSIFICATION_METRICS,
    CLASSIFICATION_SUMMARIES,
    REGRESSION_METRICS,
    REGRESSION_SUMMARIES,
    intersection_name,
)


class RunConfig(_Section):
    model_name: str
    data: DataConfig
    contract: ContractConfig = Field(default_factory=ContractConfig)
    target: str
    task: Literal["classification", "regression"] = "classification"
    positive_class: str = ""
    sensitive_columns: list[str] = Field(default_factory=list)
    columns: dict[str, Literal["numeric", "categorical"]] = Field(default_factory=dict)
    prepare: PrepareOptions = Field(default_factory=PrepareOptions)
    split: SplitOptions = Field(default_factory=SplitOptions)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    predict: PredictConfig = Field(default_factory=PredictConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    bias: BiasConfig = Field(default_factory=BiasConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    retraining: RetrainingConfig = Field(default_factory=RetrainingConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    output_root: str = "mlpipe-output"
    model_store: str = Field("", description="Model store root; empty means <output_root>/models.")

    @property
    def model_store_uri(self) -> str:
        return self.model_store or str(Path(self.output_root) / "models")

    @property
    def prediction_log_uri(self) -> str:
        return self.serving.prediction_log or str(Path(self.output_root) / "predictions")

    @property
    def batch_output_uri(self) -> str:
        return self.predict.output or str(Path(self.output_root) / "batch-predictions")

    @property
    def labels_uri(self) -> str:
        return self.serving.labels or str(Path(self.output_root) / "labels")

    @property
    def monitoring_state_uri(self) -> str:
        return self.monitoring.state or str(Path(self.output_root) / "monitoring")


def _describe(error: ValidationError, path: Path) -> str:
    first = error.errors()[0]
    # A mapping's key that is not allowed (resources.tnue) is located at its "[key]".
    key = ".".join(str(part) for part in first["loc"] if part != "[key]") or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{path}: unknown key '{key}'"
    if first["type"] == "missing":
        return f"{path}: missing key '{key}'"
    # The input is echoed with any URL's password hidden, unless the message shows it already.
    shown = redacted(first.get("input"))
    if isinstance(shown, str) and shown in first["msg"]:
        return f"{path}: key '{key}': {first['msg']}"
    return f"{path}: key '{key}': {first['msg']} (got {shown!r})"


SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Lay `key.path=value` overrides (values in YAML) over a parsed config, as --set gives them.

    Raises:
        PipelineInputError: an override without '=', or a key path through a non-mapping.
    """
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            raise PipelineInputError(f"--set '{override}': expected key.path=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise PipelineInputError(f"--set '{override}': the value is not valid YAML") from None
        *parents, leaf = key.split(".")
        node = raw
        for depth, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                where = ".".join(parents[: depth + 1])
                raise PipelineInputError(f"--set '{override}': '{where}' is not a mapping")
        node[leaf] = value
    return raw


def _read_raw(path: Path, overrides: list[str] | None) -> dict:
    """The config file's top-level mapping, with `--set` overrides laid over it."""
    try:
        # libyaml's safe loader where PyYAML has it: the same documents as yaml.safe_load, read
        # several times faster (the registry commands answer in a fraction of a second).
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)
    except FileNotFoundError:
        raise PipelineInputError(f"{path}: no such config file") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise PipelineInputError(f"{path}: not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise PipelineInputError(f"{path}: expected a mapping of keys at the top level")
    return apply_overrides(raw, overrides or [])


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Parse and type-check a run config file.

    Args:
        path: the YAML file.
        overrides: `key.path=value` settings laid over the file (the CLI's --set).

    Raises:
        PipelineInputError: one line naming the file and the key.
    """
    path = Path(path)
    raw = _read_raw(path, overrides)
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as error:
        raise PipelineInputError(_describe(error, path)) from None
    check_no_credentials(config, path)
    return config


def check_no_credentials(config: RunConfig, path: str | Path) -> None:
    """No URL in the config carries a password: the config becomes pipeline parameters, which the
    dashboard shows to anyone who can see the run, and is recorded in every model version.
    Credentials come from the environment (a Kubernetes Secret on a cluster).

    Raises:
        PipelineInputError: one line naming the key, the URL shown without its password.
    """
    found = find_url_with_password(config.model_dump(mode="json"))
    if found:
        key, place, value = found
        where = "GITOPS_TOKEN" if key == "deploy.gitops_repo" else "the environment"
        raise PipelineInputError(
            f"{path}: key '{key}': put the password in {where}, not {place}: {redact_url(value)}"
        )


class StoreKeys(BaseModel):
    """The keys that `mlpipe models` reads: which model, in which store."""

    model_config = ConfigDict(extra="ignore")

    model_name: str
    output_root: str = "mlpipe-output"
    model_store: str = ""

    @property
    def model_store_uri(self) -> str:
        return self.model_store or str(Path(self.output_root) / "models")


def load_store_keys(path: str | Path) -> StoreKeys:
    """The model's name and store from a run config, without checking its other sections: the
    registry commands need only these, and answer in a fraction of a second. An unknown
    top-level key is still refused (a mistyped `model_store` must not list another store).

    Raises:
        PipelineInputError: one line naming the file and the key.
    """
    path = Path(path)
    raw = _read_raw(path, None)
    unknown = sorted(set(raw) - set(RunConfig.model_fields))
    if unknown:
        raise PipelineInputError(f"{path}: unknown key '{unknown[0]}'")
    try:
        return StoreKeys.model_validate(raw)
    except ValidationError as error:
        raise PipelineInputError(_describe(error, path)) from None


def check_config(config: RunConfig, path: str | Path, check_data: bool = True) -> None:
    """The checks a schema cannot make: names, search space, the bias section against the
    config's own columns, and (locally) every column the config names against the data itself."""
    prefix = f"{path}: "
    try:
        check_model_name(config.model_name)
        check_families(config.tuning.families, config.task)
        if config.tuning.metric:
            check_metric(config.tuning.metric)
        check_evaluation(config)
        if config.deploy.target != "local":
            version_storage_uri(config.deploy.storage_uri, config.model_name, "v1")
        if config.deploy.target == "gitops" and not config.deploy.gitops_repo:
            raise PipelineInputError("key 'deploy.gitops_repo': set it for deploy.target gitops")
        if bool(config.data.source) == (config.data.etl is not None):
            raise PipelineInputError("key 'data': give exactly one of 'source' or 'etl'")
        # An ETL's columns exist once it ran: the validate step checks them then.
        if check_data and config.data.etl is None:
            # Here, not at the top: reading the data's columns needs pyarrow, loading a config not.
            from components.common.lake_source import resolve_source, source_columns

            check_columns(config, source_columns(resolve_source(config.data.source)))
        # After the data's columns (a misspelt sensitive column is named as such), and without
        # them: the bias section is checked against the config's own columns in every case.
        check_bias(config)
    except PipelineInputError as error:
        raise PipelineInputError(prefix + str(error)) from None


def _unknown(
    key: str, column: str, what: str, known: list[str] | set[str], listed_as: str = "have"
) -> PipelineInputError:
    """One line naming the key and the column, with a hint when only the case differs."""
    near = sorted(name for name in known if name.lower() == column.lower() and name != column)
    hint = f"; did you mean '{near[0]}'? (names are case-sensitive)" if near else ""
    listed = ", ".join(known if isinstance(known, list) else sorted(known)) or "none"
    return PipelineInputError(
        f"key '{key}': column '{column}' is not {what} ({listed_as}: {listed}){hint}"
    )


def check_bias(config: RunConfig) -> None:
    """The bias section against the config's own columns, needing no data (so ETL sources too):
    a name here that matches nothing would make the fairness gate check nothing.

    - bias.thresholds[i].columns: sensitive columns or intersections "a_x_b" of bias.intersections;
    - bias.thresholds[i].metric: a summary metric of the task;
    - a threshold needs sensitive columns or intersections to be checked on;
    - bias.bands: keys that are sensitive columns or columns of an intersection (the only columns
      grouped, so the only ones banded);
    - bias.mitigate_by: a sensitive column.
    """
    bias, sensitive = config.bias, config.sensitive_columns
    grouped = set(sensitive) | {column for pair in bias.intersections for column in pair}
    sets = [*sensitive, *map(intersection_name, bias.intersections)]
    summaries = REGRESSION_SUMMARIES if config.task == "regression" else CLASSIFICATION_SUMMARIES
    for index, threshold in enumerate(bias.thresholds):
        key = f"bias.thresholds[{index}]"
        if threshold.metric not in summaries:
            raise PipelineInputError(
                f"key '{key}.metric': '{threshold.metric}' is not a {config.task} summary metric "
                f"(known: {', '.join(summaries)})"
            )
        if not sets:
            raise PipelineInputError(
                f"key '{key}': no sensitive_columns or bias.intersections to check it on"
            )
        for column in threshold.columns:
            if column not in sets:
                raise _unknown(f"{key}.columns", column, "a sensitive column or intersection", sets)
    for column in bias.bands:
        if column not in grouped:
            raise _unknown(
                "bias.bands", column, "a sensitive column or a column of an intersection", grouped
            )
    if bias.mitigate_by and bias.mitigate_by not in sensitive:
        raise _unknown("bias.mitigate_by", bias.mitigate_by, "a sensitive column", sensitive)


def check_columns(config: RunConfig, source_columns: list[str]) -> None:
    """Every column the config names, against the data source's columns (and, when data.columns
    projects them, against the projection: a column not read is not there)."""
    source = f"the data source '{config.data.source}'"
    data = set(source_columns)
    for column in config.data.columns:
        if column not in data:
            raise _unknown("data.columns", column, f"in {source}", data, "its columns")
    if config.data.columns:
        data, source = set(config.data.columns), "in data.columns, the columns read"
    else:
        source = f"in {source}"
    prepare = config.prepare
    derived = {feature.name for feature in prepare.derived}
    named = [("target", config.target)]
    named += [("sensitive_columns", c) for c in config.sensitive_columns]
    named += [("columns", c) for c in config.columns]
    named += [("predict.key_columns", c) for c in config.predict.key_columns]
    named += [
        (f"bias.intersections[{index}]", column)
        for index, pair in enumerate(config.bias.intersections)
        for column in pair
    ]
    named += [
        (f"split.{key}", column)
        for key in ("group_column", "time_column")
        if (column := getattr(config.split, key))
    ]
    named += [("prepare.exclude", c) for c in prepare.exclude]
    for index, feature in enumerate(prepare.derived):
        key = f"prepare.derived[{index}]"
        if feature.name in data:
            raise PipelineInputError(
                f"key '{key}.name': '{feature.name}' is already a column {source}"
            )
        where = f"{key}.bins.column" if feature.bins is not None else f"{key}.{feature.source}"
        named += [(where, column) for column in feature.inputs]
    for key, column in named:
        if column not in data:
            raise _unknown(key, column, source, data, "its columns")
    # These may also name a derived feature.
    features = [("prepare.log_transform", c) for c in prepare.log_transform]
    features += [("prepare.outliers.columns", c) for c in prepare.outliers.columns]
    features += [(f"prepare.columns.{c}", c) for c in prepare.columns]
    for key, column in features:
        if column not in data and column not in derived:
            raise _unknown(
                key, column, f"{source} or a derived feature", data | derived, "its columns"
            )


def check_evaluation(config: RunConfig) -> None:
    """Gate metrics must be metrics of the task; thresholds need binary classification."""
    known = REGRESSION_METRICS if config.task == "regression" else CLASSIFICATION_METRICS
    for key, names in (
        ("evaluation.thresholds", list(config.evaluation.thresholds)),
        ("evaluation.compare_metrics", config.evaluation.compare_metrics),
    ):
        for name in names:
            if name not in known:
                raise PipelineInputError(
                    f"key '{key}': '{name}' is not a {config.task} metric "
                    f"(known: {', '.join(sorted(known))})"
                )
    rule = config.evaluation.threshold_rule
    if config.task == "regression" and rule != "fixed":
        raise PipelineInputError(
            f"key 'evaluation.threshold_rule': {rule} needs binary classification"
        )
    if rule != "fixed" and config.bias.mitigation not in ("none", "reweighing"):
        raise PipelineInputError(
            f"key 'evaluation.threshold_rule': {rule} cannot be combined with bias.mitigation "
            f"{config.bias.mitigation}, which sets its own thresholds"
        )


def _watermark_text(path: str) -> str:
    """The watermark file's JSON, checked, as the one-line string the pipeline parameter takes."""
    if not path:
        return ""
    try:
        watermark = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineInputError(f"data.since_watermark '{path}': no such file") from None
    except json.JSONDecodeError as error:
        raise PipelineInputError(f"data.since_watermark '{path}': not JSON ({error})") from None
    if not isinstance(watermark, dict) or not isinstance(watermark.get("files"), dict):
        raise PipelineInputError(
            f"data.since_watermark '{path}': expected a watermark with a 'files' mapping"
        )
    return json.dumps(watermark, sort_keys=True)


def reviewed_contract_text(path: str) -> str:
    """The reviewed contract file as the JSON string the pipeline parameter takes."""
    if not path:
        return ""
    try:
        contract = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineInputError(f"contract.path '{path}': no such file") from None
    except yaml.YAMLError:
        raise PipelineInputError(f"contract.path '{path}': not valid YAML or JSON") from None
    check_contract_format(contract, f"contract.path '{path}'")
    return json.dumps(contract, sort_keys=True, default=str)


def section_parameter(section: BaseModel, **resolved) -> dict:
    """A config section as its pipeline parameter: every key with its value or default (so the
    dashboard's run form shows them all), nulls left out (a KFP parameter cannot carry them; the
    step's model restores them), `resolved` laid over it."""
    return {**section.model_dump(mode="json", exclude_none=True), **resolved}


def pipeline_arguments(config: RunConfig, resolve_paths: bool = True) -> dict:
    """The pipeline's parameters for this config: the top-level keys one by one, each section as
    one parameter (a dict the step checks with the section's own model), the contents of the
    files the config names (a pod cannot read the user's files), and the whole config as JSON.

    Args:
        resolve_paths: make local paths absolute (local runs); a cluster run passes URIs as given.
    """

    def local(uri: str) -> str:
        if resolve_paths and uri and "://" not in uri:
            return str(Path(uri).expanduser().resolve())
        return uri

    data = {"source": local(config.data.source)}
    if config.data.etl is not None:
        etl = config.data.etl.model_dump(mode="json", exclude_none=True)
        if etl["source"].get("uri"):
            etl["source"]["uri"] = local(etl["source"]["uri"])
        data["etl"] = etl
    data["snapshot_root"] = local(
        config.data.snapshot_root or str(Path(config.output_root) / "snapshots")
    )
    bias = {
        "thresholds": config.bias.thresholds_as_dicts(),
        "mitigate_by": config.bias.mitigate_by or next(iter(config.sensitive_columns), ""),
    }
    return {
        "model_name": config.model_name,
        "model_store_uri": local(config.model_store_uri),
        "target": config.target,
        "task": config.task,
        "positive_class": config.positive_class,
        "sensitive_columns": config.sensitive_columns,
        "column_types": config.columns,
        "data": section_parameter(config.data, **data),
        "since_watermark": _watermark_text(config.data.since_watermark),
        "contract": section_parameter(config.contract),
        "reviewed_contract": reviewed_contract_text(config.contract.path),
        "prepare": section_parameter(config.prepare),
        "split": section_parameter(config.split),
        # JSON text, not a dict: a KFP dict parameter turns every number into a float, and
        # max_depth: 2 would reach scikit-learn as 2.0 (TuningConfig reads either).
        "tuning": section_parameter(
            config.tuning, space=json.dumps(config.tuning.space, sort_keys=True)
        ),
        "ray": section_parameter(config.ray, storage_path=local(config.ray.storage_path)),
        "bias": section_parameter(config.bias, **bias),
        "evaluation": section_parameter(config.evaluation),
        "serving": section_parameter(
            config.serving,
            prediction_log=local(config.prediction_log_uri),
            labels=local(config.labels_uri),
        ),
        "deploy": section_parameter(config.deploy),
        "alerts": section_parameter(config.alerts),
        "retraining": section_parameter(config.retraining),
        # Recorded in each model version's metadata as this run's configuration.
        # JSON text, not a dict: KFP parameters cannot carry the config's nulls.
        # Any URL's password hidden, whatever let it in: this text is shown and stored.
        "run_config": json.dumps(redacted(config.model_dump(mode="json")), sort_keys=True),
    }
