import json
import os
import re

import pytest

from components.common.errors import PipelineInputError
from pipelines.config import check_config, load_config, load_store_keys, pipeline_arguments
from tests.conftest import write_config


def _checked(path):
    config = load_config(path)
    check_config(config, path)
    return config


def test_the_shipped_config_becomes_pipeline_arguments(tmp_path, demo_lake):
    path = write_config(tmp_path / "run.yaml", **{"data.source": str(demo_lake)})
    arguments = pipeline_arguments(_checked(path))
    assert arguments["data"]["source"] == str(demo_lake.resolve())
    assert arguments["target"] == "released"
    assert arguments["sensitive_columns"] == ["colour", "sex", "age"]
    assert arguments["model_store_uri"].endswith("mlpipe-output/models")
    assert arguments["tuning"]["num_trials"] == 16


def test_cluster_arguments_keep_uris_as_written(tmp_path, demo_lake):
    path = write_config(
        tmp_path / "run.yaml", **{"data.source": "lake/arrests", "model_store": "models"}
    )
    arguments = pipeline_arguments(load_config(path), resolve_paths=False)
    assert arguments["data"]["source"] == "lake/arrests"
    assert arguments["model_store_uri"] == "models"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tuning.bogus": 1}, "unknown key 'tuning.bogus'"),
        ({"targte": "released"}, "unknown key 'targte'"),
        ({"target": None}, "missing key 'target'"),
        ({"tuning.num_trials": "many"}, "key 'tuning.num_trials': Input should be a valid integer"),
        ({"split.test_size": 1.5}, "key 'split.test_size': Input should be less than 1"),
        ({"task": "ranking"}, "key 'task': Input should be 'classification' or 'regression'"),
        ({"columns": {"age": "text"}}, "key 'columns.age'"),
        ({"data.filters": [["year", "~", 2000]]}, "key 'data.filters.0.1'"),
        ({"deploy.target": "cloud"}, "key 'deploy.target': Input should be 'local', 'kserve' or"),
        ({"deploy.canary_traffic_percent": 100}, "key 'deploy.canary_traffic_percent'"),
        ({"evaluation.threshold_rule": "best"}, "key 'evaluation.threshold_rule'"),
        ({"evaluation.margin": -0.1}, "key 'evaluation.margin'"),
        ({"prepare.numeric": {"scale": "zscore"}}, "key 'prepare.numeric.scale'"),
        ({"split.strategy": "shuffle"}, "key 'split.strategy'"),
    ],
)
def test_schema_errors_name_the_file_and_key(tmp_path, overrides, message):
    path = write_config(tmp_path / "run.yaml", **overrides)
    with pytest.raises(PipelineInputError, match=message) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"target": "outcome"}, "key 'target': column 'outcome' is not in the data source"),
        ({"sensitive_columns": ["race"]}, "key 'sensitive_columns': column 'race'"),
        ({"data.source": "/nonexistent/lake"}, "data source '/nonexistent/lake': no such file"),
        ({"data.source": "ftp://host/lake"}, "scheme 'ftp://' is not supported"),
        ({"model_name": "Arrests_Model"}, "model name 'Arrests_Model'"),
        ({"tuning.families": ["xgboost"]}, "unknown family 'xgboost'"),
        ({"tuning.metric": "auc"}, "tuning.metric: 'auc'"),
        ({"deploy.target": "kserve"}, "deploy.storage_uri '': expected a URI KServe can read"),
        (
            {"deploy.target": "gitops", "deploy.storage_uri": "s3://models"},
            "key 'deploy.gitops_repo': set it for deploy.target gitops",
        ),
        (
            {"evaluation.thresholds": {"r2": 0.5}},
            "key 'evaluation.thresholds': 'r2' is not a classification metric",
        ),
        ({"evaluation.compare_metrics": ["auc"]}, "key 'evaluation.compare_metrics': 'auc'"),
        (
            {"evaluation.threshold_rule": "max_f1", "bias.mitigation": "threshold_optimizer"},
            "cannot be combined with bias.mitigation threshold_optimizer",
        ),
        (
            {"split.strategy": "group", "split.group_column": "household"},
            "key 'split.group_column': column 'household'",
        ),
    ],
)
def test_semantic_errors_name_the_problem(tmp_path, demo_lake, overrides, message):
    path = write_config(tmp_path / "run.yaml", **({"data.source": str(demo_lake)} | overrides))
    with pytest.raises(PipelineInputError, match=message):
        _checked(path)


def test_yaml_that_does_not_parse_names_the_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model_name: x\ndata: [unclosed\n")
    with pytest.raises(PipelineInputError, match="not valid YAML at line"):
        load_config(path)


def test_a_missing_config_file_is_named(tmp_path):
    with pytest.raises(PipelineInputError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")


def test_a_watermark_file_becomes_the_since_watermark_parameter(tmp_path, demo_lake):
    watermark = tmp_path / "watermark.json"
    watermark.write_text('{"source_uri": "x", "files": {"year=1997/part-0.parquet": "1:2"}}')
    path = write_config(
        tmp_path / "run.yaml",
        **{"data.source": str(demo_lake), "data.since_watermark": str(watermark)},
    )
    arguments = pipeline_arguments(load_config(path))
    assert json.loads(arguments["since_watermark"])["files"] == {"year=1997/part-0.parquet": "1:2"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("not json", "not JSON"),
        ('{"files": []}', "expected a watermark with a 'files' mapping"),
    ],
)
def test_a_bad_watermark_file_is_named(tmp_path, demo_lake, content, message):
    watermark = tmp_path / "watermark.json"
    if content is not None:
        watermark.write_text(content)
    path = write_config(
        tmp_path / "run.yaml",
        **{"data.source": str(demo_lake), "data.since_watermark": str(watermark)},
    )
    with pytest.raises(PipelineInputError, match=f"data.since_watermark '{watermark}': {message}"):
        pipeline_arguments(load_config(path))


def test_the_bias_section_becomes_pipeline_arguments(tmp_path, demo_lake):
    path = write_config(tmp_path / "run.yaml", **{"data.source": str(demo_lake)})
    arguments = pipeline_arguments(_checked(path))
    bias = arguments["bias"]
    assert bias["bands"] == {"age": [0, 18, 25, 35, 50, 120]}
    assert bias["intersections"] == [["colour", "sex"]]
    gate = bias["thresholds"][0]
    assert gate == {
        "metric": "demographic_parity_ratio",
        "threshold": 0.8,
        "direction": "at_least",
        "blocking": True,
        "columns": [],
    }
    assert bias["thresholds"][1]["direction"] == "at_most"
    assert bias["mitigation"] == "none" and bias["mitigate_by"] == "colour"


def test_without_a_bias_section_mitigation_is_off_and_there_is_no_gate(tmp_path, demo_lake):
    path = write_config(tmp_path / "run.yaml", **{"data.source": str(demo_lake), "bias": None})
    arguments = pipeline_arguments(_checked(path))
    bias = arguments["bias"]
    assert bias["thresholds"] == [] and bias["mitigation"] == "none"
    assert bias["mitigate_by"] == "colour"  # the first sensitive column


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"bias.bogus": 1}, "unknown key 'bias.bogus'"),
        (
            {"bias.mitigation": "magic"},
            "key 'bias.mitigation': Input should be 'none', 'reweighing'",
        ),
        ({"bias.on_not_computable": "ignore"}, "key 'bias.on_not_computable'"),
        ({"bias.bands": {"age": [30, 18]}}, "key 'bias.bands': Value error, bands of 'age' must"),
        ({"bias.intersections": [["sex", "sex"]]}, "key 'bias.intersections': Value error"),
        ({"bias.intersections": [["sex"]]}, "key 'bias.intersections.0.1'"),
        ({"bias.min_group_size": 0}, "key 'bias.min_group_size'"),
        ({"bias.thresholds": [{"metric": "parity", "threshold": 0.8}]}, "bias.thresholds.0.metric"),
        (
            {"bias.thresholds": [{"metric": "demographic_parity_ratio"}]},
            "bias.thresholds.0.threshold",
        ),
        (
            {"bias.thresholds": [{"metric": "mae_ratio", "threshold": 1, "direction": "up"}]},
            "key 'bias.thresholds.0.direction'",
        ),
        (
            {"bias.mitigation": "threshold_optimizer", "bias.constraint": "error_rate_parity"},
            "key 'bias.constraint': Value error, threshold_optimizer takes demographic_parity",
        ),
    ],
)
def test_bias_errors_name_the_key(tmp_path, overrides, message):
    path = write_config(tmp_path / "run.yaml", **overrides)
    with pytest.raises(PipelineInputError, match=message) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


def test_set_overrides_lay_yaml_values_over_the_file(tmp_path, demo_lake):
    path = write_config(tmp_path / "run.yaml", **{"data.source": str(demo_lake)})
    config = load_config(
        path,
        [
            "tuning.num_trials=2",
            "tuning.families=[random_forest]",
            "tuning.space.random_forest={n_estimators: 5, max_depth: 2}",
            "evaluation.thresholds.roc_auc=0.9",
        ],
    )
    assert config.tuning.num_trials == 2 and config.tuning.families == ["random_forest"]
    assert config.evaluation.thresholds == {"roc_auc": 0.9}
    arguments = pipeline_arguments(config)
    # Integers stay integers: the space travels as JSON text, not as a KFP struct of floats.
    space = json.loads(arguments["tuning"]["space"])
    assert space["random_forest"] == {"n_estimators": 5, "max_depth": 2}
    assert isinstance(space["random_forest"]["max_depth"], int)
    assert json.loads(arguments["run_config"])["tuning"]["num_trials"] == 2
    assert arguments["evaluation"]["thresholds"] == {"roc_auc": 0.9}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tuning.num_trials", "expected key.path=value"),
        ("tuning.num_trials=[1", "the value is not valid YAML"),
        ("model_name.x=1", "'model_name' is not a mapping"),
        ("tuning.bogus=1", "unknown key 'tuning.bogus'"),
    ],
)
def test_bad_overrides_are_named(tmp_path, override, message):
    path = write_config(tmp_path / "run.yaml")
    with pytest.raises(PipelineInputError, match=message):
        load_config(path, [override])


def test_an_etl_source_becomes_the_ingest_steps_spec(tmp_path, demo_lake):
    csv = tmp_path / "people.csv"
    csv.write_text("name,age\nann,31\nbob,45\n")
    etl = {
        "source": {"uri": "people.csv"},
        "transforms": [{"rename": {"age": "years"}}, {"filter": ["years", ">=", 40]}],
    }
    path = write_config(tmp_path / "run.yaml", **{"data.source": None, "data.etl": etl})
    config = load_config(path)
    check_config(config, path)
    here = os.getcwd()
    os.chdir(tmp_path)  # relative paths are relative to where mlpipe runs
    try:
        arguments = pipeline_arguments(config)
    finally:
        os.chdir(here)
    spec = arguments["data"]["etl"]
    assert spec["source"]["uri"] == str(csv.resolve()) and arguments["data"]["source"] == ""
    assert spec["transforms"][1] == {"filter": ["years", ">=", 40]}
    assert arguments["data"]["snapshot_root"].endswith("mlpipe-output/snapshots")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data.etl": {"source": {"uri": "a.csv"}}}, "give exactly one of 'source' or 'etl'"),
        (
            {
                "data.source": None,
                "data.etl": {"source": {"uri": "a.csv"}, "transforms": [{"x": 1}]},
            },
            "key 'data.etl.transforms.0",
        ),
    ],
)
def test_etl_config_errors_are_named(tmp_path, demo_lake, overrides, message):
    path = write_config(tmp_path / "run.yaml", **({"data.source": str(demo_lake)} | overrides))
    with pytest.raises(PipelineInputError, match=message):
        _checked(path)


def test_the_registry_commands_read_the_store_keys_and_refuse_a_mistyped_one(tmp_path):
    path = write_config(tmp_path / "run.yaml", **{"model_store": "s3://models"})
    keys = load_store_keys(path)
    assert (keys.model_name, keys.model_store_uri) == ("arrests-release", "s3://models")
    # No store named: <output_root>/models, as `mlpipe run` registers into.
    keys = load_store_keys(write_config(tmp_path / "plain.yaml"))
    assert keys.model_store_uri == "mlpipe-output/models"
    # A mistyped top-level key would list another store without a word: it is refused.
    typo = write_config(tmp_path / "typo.yaml", **{"model_stor": "s3://models"})
    with pytest.raises(PipelineInputError, match=r"typo.yaml: unknown key 'model_stor'"):
        load_store_keys(typo)
    with pytest.raises(PipelineInputError, match=r"typo.yaml: unknown key 'model_stor'"):
        load_config(typo)


# --- Every column the config names, checked before anything runs ------------------------------

DPR = "demographic_parity_ratio"


@pytest.mark.parametrize(
    ("overrides", "key", "column", "message"),
    [
        # Against the config itself: the case, a blocking threshold on 'COLOUR'.
        (
            {"bias.thresholds": [{"metric": DPR, "threshold": 0.8, "columns": ["COLOUR"]}]},
            "bias.thresholds[0].columns",
            "COLOUR",
            "is not a sensitive column or intersection (have: colour, sex, age, colour_x_sex); "
            "did you mean 'colour'?",
        ),
        (
            {"bias.thresholds": [{"metric": DPR, "threshold": 0.8, "columns": ["sex_x_colour"]}]},
            "bias.thresholds[0].columns",
            "sex_x_colour",
            "is not a sensitive column or intersection",
        ),
        (
            {"bias.bands": {"checks": [0, 2, 6]}},
            "bias.bands",
            "checks",
            "is not a sensitive column or a column of an intersection",
        ),
        ({"bias.mitigate_by": "Sex"}, "bias.mitigate_by", "Sex", "is not a sensitive column"),
        # Against the data's columns.
        (
            {"bias.intersections": [["colour", "race"]]},
            "bias.intersections[0]",
            "race",
            "is not in the data source",
        ),
        (
            {"prepare.columns": {"income": {"scale": "robust"}}},
            "prepare.columns.income",
            "income",
            "is not in the data source",
        ),
        ({"prepare.exclude": ["person_id"]}, "prepare.exclude", "person_id", "is not in the data"),
        ({"prepare.log_transform": ["Checks"]}, "prepare.log_transform", "Checks", "did you mean"),
        (
            {"prepare.outliers": {"method": "iqr", "columns": ["salary"]}},
            "prepare.outliers.columns",
            "salary",
            "is not in the data source",
        ),
        (
            {"prepare.derived": [{"name": "r", "ratio": ["checks", "salary"]}]},
            "prepare.derived[0].ratio",
            "salary",
            "is not in the data source",
        ),
        (
            {"prepare.derived": [{"name": "m", "date_part": ["arrested_on", "month"]}]},
            "prepare.derived[0].date_part",
            "arrested_on",
            "is not in the data source",
        ),
        (
            {"prepare.derived": [{"name": "b", "bins": {"column": "Age", "edges": [0, 30]}}]},
            "prepare.derived[0].bins.column",
            "Age",
            "did you mean 'age'?",
        ),
        (
            {"split.strategy": "time", "split.time_column": "arrested_on"},
            "split.time_column",
            "arrested_on",
            "is not in the data source",
        ),
        ({"data.columns": ["colour", "salary"]}, "data.columns", "salary", "is not in the data"),
        (
            {"data.columns": ["released", "colour", "age", "checks"]},
            "sensitive_columns",
            "sex",
            "is not in data.columns, the columns read",
        ),
    ],
)
def test_every_column_the_config_names_is_checked(
    tmp_path, demo_lake, overrides, key, column, message
):
    path = write_config(tmp_path / "run.yaml", **({"data.source": str(demo_lake)} | overrides))
    with pytest.raises(PipelineInputError) as caught:
        _checked(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: key '{key}': column '{column}' ") and "\n" not in text
    assert message in text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"bias.thresholds": [{"metric": DPR, "threshold": 0.8, "columns": ["COLOUR"]}]},
            "key 'bias.thresholds[0].columns': column 'COLOUR' is not a sensitive column",
        ),
        (
            {"bias.thresholds": [{"metric": "mae_ratio", "threshold": 0.8}]},
            "key 'bias.thresholds[0].metric': 'mae_ratio' is not a classification summary metric",
        ),
        (
            {
                "task": "regression",
                "positive_class": "",
                "evaluation": {},
                "tuning.families": ["random_forest"],
                "tuning.metric": "r2",
            },
            "key 'bias.thresholds[0].metric': 'demographic_parity_ratio' is not a regression",
        ),
        (
            {"sensitive_columns": [], "bias.intersections": []},
            "key 'bias.thresholds[0]': no sensitive_columns or bias.intersections to check it on",
        ),
    ],
)
def test_the_bias_section_is_checked_without_the_data(tmp_path, overrides, message):
    # No data source at all: these hold for ETL sources too, whose columns exist only at run time.
    path = write_config(tmp_path / "run.yaml", **({"data.source": "nowhere/lake"} | overrides))
    with pytest.raises(PipelineInputError) as caught:
        check_config(load_config(path), path, check_data=False)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    assert message in text


def test_prepare_options_may_name_derived_features(tmp_path, demo_lake):
    derived = [{"name": "checks_per_year", "ratio": ["checks", "age"]}]
    path = write_config(
        tmp_path / "run.yaml",
        **{
            "data.source": str(demo_lake),
            "prepare.derived": derived,
            "prepare.log_transform": ["checks_per_year"],
            "prepare.columns": {"checks_per_year": {"scale": "robust"}},
            "bias.intersections": [["colour", "employed"]],  # a column grouped only here
            "bias.bands": {"age": [0, 30, 120]},
        },
    )
    _checked(path)


def test_a_derived_feature_may_not_take_a_data_columns_name(tmp_path, demo_lake):
    derived = [{"name": "age", "ratio": ["checks", "year"]}]
    path = write_config(
        tmp_path / "run.yaml", **{"data.source": str(demo_lake), "prepare.derived": derived}
    )
    with pytest.raises(PipelineInputError, match=r"key 'prepare.derived\[0\].name': 'age' is"):
        _checked(path)


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"tnue": {"requests": {"cpu": 2}}}, "key 'resources.tnue': Input should be 'default'"),
        ({"tune": {"request": {"cpu": 2}}}, "unknown key 'resources.tune.request'"),
        ({"tune": {"requests": {"cpus": 2}}}, "unknown key 'resources.tune.requests.cpus'"),
        ({"train": {"limits": {"memory": "8 GB"}}}, "not a memory quantity"),
        ({"train": {"limits": {"cpu": "two"}}}, "not a CPU quantity"),
        ({"tune": {"requests": {"cpu": 8}}}, "tune: the cpu request 8 is above its limit 4"),
        # The config's default is laid over the steps' own defaults: tune's 4Gi request.
        ({"default": {"limits": {"memory": "3Gi"}}}, "tune: the memory request 4Gi is above"),
    ],
)
def test_a_resources_key_or_quantity_kubernetes_would_refuse_is_named(tmp_path, resources, message):
    path = write_config(tmp_path / "run.yaml", resources=resources)
    with pytest.raises(PipelineInputError, match=re.escape(message)):
        load_config(path)


def test_resources_lay_the_config_over_the_defaults_step_by_step(tmp_path):
    from components.common.settings.resources import DEFAULT_RESOURCES, resources_of

    resources = {
        "default": {"requests": {"memory": "1536Mi"}},
        "tune": {"requests": {"cpu": 3}, "limits": {"cpu": "6", "memory": "12Gi"}},
    }
    config = load_config(write_config(tmp_path / "run.yaml", resources=resources))
    assert resources_of("tune", config.resources) == {
        "requests": {"cpu": "3", "memory": "1536Mi"},
        "limits": {"cpu": "6", "memory": "12Gi"},
    }
    assert resources_of("gate", config.resources) == {
        "requests": {"cpu": DEFAULT_RESOURCES["requests"]["cpu"], "memory": "1536Mi"},
        "limits": DEFAULT_RESOURCES["limits"],
    }
    # Without the section, every step has the defaults, each request within its limit.
    from kubernetes.utils.quantity import parse_quantity

    from components.common.settings.resources import STEPS

    plain = load_config(write_config(tmp_path / "plain.yaml"))
    for step in STEPS:
        pod = resources_of(step, plain.resources)
        assert pod == resources_of(step), step
        for unit in ("cpu", "memory"):
            assert parse_quantity(pod["requests"][unit]) <= parse_quantity(pod["limits"][unit])
