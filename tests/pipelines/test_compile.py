"""The compiled spec is the product: golden comparison, and the file itself runs (test_local_run)."""

from components.common.image import COMPONENT_IMAGE
from pipelines.training_pipeline import COMPILED_PIPELINE, PIPELINE_NAME, compile_pipeline

# Which steps each step waits for: the order ingest -> validate -> prepare/bias -> tune -> train ->
# evaluate -> fairness -> gate -> register -> run-report, deploy -> promote, plus the data each
# one reads (the plan, which each of ingest, tune, train and register reads, runs before them all,
# outside their group).
DEPENDENCIES = {
    "ingest": set(),
    "validate": {"ingest"},
    "prepare": {"ingest", "validate"},
    "bias": {"ingest", "validate"},
    "tune": {"bias", "prepare", "validate"},
    "train": {"prepare", "tune", "validate"},
    "evaluate": {"prepare", "train", "tune", "validate"},
    "fairness": {"evaluate", "prepare", "train", "validate"},
    "export-onnx-model": {"prepare", "train", "validate"},
    "gate": {"evaluate", "fairness", "prepare", "train", "validate"},
    "register": {
        "evaluate",
        "export-onnx-model",
        "fairness",
        "gate",
        "ingest",
        "prepare",
        "train",
        "tune",
        "validate",
    },
    "run-report": {
        "bias",
        "evaluate",
        "fairness",
        "gate",
        "ingest",
        "register",
        "tune",
        "validate",
    },
    # deploy, then promote, run inside dsl.If(gate blessed): the condition's sub-DAG.
    "condition-3": {"gate", "prepare", "register"},
}


def compiled_spec() -> dict:
    """The checked-in pipeline spec (its first document; the second is the Kubernetes platform's)."""
    from pipelines.kfp_resources import read_spec

    return read_spec(COMPILED_PIPELINE)[0]


def exit_handler_tasks(spec: dict) -> dict:
    """The exit handler's sub-DAG: the plan, and the group of the steps after it."""
    return spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]


def training_tasks(spec: dict) -> dict:
    """The steps' tasks: inside dsl.If(the plan is not skip), inside the exit handler."""
    return spec["components"]["comp-condition-2"]["dag"]["tasks"]


def test_checked_in_spec_equals_a_fresh_compile(tmp_path):
    fresh = compile_pipeline(tmp_path / "fresh.yaml").read_text()
    assert fresh == COMPILED_PIPELINE.read_text(), (
        "pipelines/training_pipeline.yaml is stale: run `make compile` and commit the diff"
    )


def test_checked_in_pipeline_resources_are_current(tmp_path):
    from pipelines.kfp_resources import write_pipeline_resources

    checked_in = COMPILED_PIPELINE.parents[1] / "manifests" / "base" / "pipeline" / "pipeline.yaml"
    write_pipeline_resources(tmp_path / "pipeline.yaml")
    assert (tmp_path / "pipeline.yaml").read_text() == checked_in.read_text(), (
        "manifests/base/pipeline/pipeline.yaml is stale: run `make compile` and commit the diff"
    )


def test_spec_has_every_stage_in_order_on_the_project_image():
    spec = compiled_spec()
    assert spec["pipelineInfo"]["name"] == PIPELINE_NAME
    tasks = training_tasks(spec)
    assert {
        name: set(task.get("dependentTasks", [])) for name, task in tasks.items()
    } == DEPENDENCIES
    executors = spec["deploymentSpec"]["executors"].values()
    assert {e["container"]["image"] for e in executors} == {COMPONENT_IMAGE}
    # No component installs packages at run time: the image has them.
    assert not any("pip install" in " ".join(e["container"]["command"]) for e in executors)


def test_live_data_is_never_served_from_cache():
    spec = compiled_spec()
    tasks = training_tasks(spec)
    assert tasks["ingest"]["cachingOptions"] == {}
    blessed = spec["components"]["comp-condition-3"]["dag"]["tasks"]
    assert list(blessed) == ["deploy", "promote"]
    assert blessed["deploy"]["cachingOptions"] == {} and blessed["promote"]["cachingOptions"] == {}
    assert blessed["promote"]["dependentTasks"] == ["deploy"]
    assert "gate-Output" in tasks["condition-3"]["triggerPolicy"]["condition"]
    # The plan reads the registry and the lake; the steps run unless it found nothing new.
    outer = exit_handler_tasks(spec)
    assert set(outer) == {"plan", "condition-2"} and outer["plan"]["cachingOptions"] == {}
    assert outer["condition-2"]["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--plan-Output'] != 'skip'"
    )
    # The registry is read and written: the gate, register and the report never come from cache.
    for name in ("gate", "register", "run-report"):
        assert tasks[name]["cachingOptions"] == {}
    assert tasks["tune"]["cachingOptions"] == {"enableCache": True}


def test_every_step_runs_through_the_step_runner_and_its_external_steps_match_the_spec():
    from components.common.step_runner import EXTERNAL_STEPS

    spec = compiled_spec()
    for name, executor in spec["deploymentSpec"]["executors"].items():
        command = " ".join(executor["container"]["command"])
        assert "python3 -m components.common.step_runner --wraps kfp.dsl.executor_main" in command
        assert "python3 -m kfp.dsl.executor_main" not in command, name
    tasks = {
        **spec["root"]["dag"]["tasks"],
        **exit_handler_tasks(spec),
        **training_tasks(spec),
        **spec["components"]["comp-condition-3"]["dag"]["tasks"],
    }
    # The steps that Kubeflow's cache (keyed by names) must skip are those that the step cache
    # (keyed by content) skips too: they read or change what is not among their inputs.
    uncached = {name for name, task in tasks.items() if task.get("cachingOptions") == {}}
    # The monitor is the monitoring pipeline's (tests/pipelines/test_monitoring_pipeline.py).
    groups = {"condition-2", "condition-3", "exit-handler-1"}
    assert uncached - groups == EXTERNAL_STEPS - {"monitor", "batch-predict"}


def test_each_config_section_is_one_parameter_with_its_models_defaults():
    from components.common.settings.sections import SECTIONS

    assert list(SECTIONS) == [
        "data",
        "contract",
        "prepare",
        "split",
        "tuning",
        "ray",
        "bias",
        "evaluation",
        "serving",
        "deploy",
        "monitoring",
        "alerts",
        "retraining",
    ]
    # The monitoring pipeline's section; not a parameter of the training pipeline.
    training_sections = {k: v for k, v in SECTIONS.items() if k != "monitoring"}
    parameters = compiled_spec()["root"]["inputDefinitions"]["parameters"]
    top_level = {"model_name", "model_store_uri", "target", "task", "positive_class"}
    top_level |= {"sensitive_columns", "column_types", "run_config", "training_mode", "trigger"}
    file_contents = {"since_watermark", "reviewed_contract"}
    assert set(parameters) == set(training_sections) | top_level | file_contents
    for name, model in training_sections.items():
        assert parameters[name]["parameterType"] == "STRUCT"
        # The run form shows every key of the section with the model's own default.
        default = parameters[name]["defaultValue"]
        assert default == model().model_dump(mode="json", exclude_none=True)
        assert model.model_validate(default) == model()


def test_every_step_runs_inside_an_exit_handler_whose_exit_task_alerts():
    spec = compiled_spec()
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"exit-handler-1", "notify"}
    notify = root["notify"]
    # The exit task runs when the group ends, failed or not, and reads its final status.
    assert notify["dependentTasks"] == ["exit-handler-1"]
    assert notify["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}
    assert notify["inputs"]["parameters"]["status"] == {
        "taskFinalStatus": {"producerTask": "exit-handler-1"}
    }
    assert notify["inputs"]["parameters"]["alerts_config"] == {"componentInputParameter": "alerts"}
    assert notify["cachingOptions"] == {}
    # The gate (fairness_blocked) and promote (new_champion) get the alerts section too.
    assert training_tasks(spec)["gate"]["inputs"]["parameters"]["alerts_config"] == {
        "componentInputParameter": "pipelinechannel--alerts"
    }


def _platform_executors(path=COMPILED_PIPELINE) -> dict:
    from pipelines.kfp_resources import read_spec

    _, platform = read_spec(path)
    return platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _secrets(executor: dict) -> dict[str, dict]:
    """Secret name -> {env var: key}, each checked optional (identity-based clusters need none)."""
    found = {}
    for secret in executor.get("secretAsEnv", []):
        assert secret["optional"] is True, secret["secretName"]
        found[secret["secretName"]] = {p["envVar"]: p["secretKey"] for p in secret["keyToEnv"]}
    return found


def test_every_step_gets_the_object_store_secret_and_only_its_own_others():
    executors = _platform_executors()
    spec = compiled_spec()
    # Every step's pod: the object store is read or written by all of them (the step cache).
    assert set(executors) == set(spec["deploymentSpec"]["executors"])
    store = {key: key for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")}
    others = {}
    for name, executor in executors.items():
        secrets = _secrets(executor)
        assert secrets.pop("mlpipe-object-store") == store, name
        others.update({(name, secret): env for secret, env in secrets.items()})
    webhook = {"MLPIPE_ALERT_WEBHOOK_URL": "webhook_url"}
    assert others == {
        ("exec-tune", "mlpipe-tune"): {"RAY_AUTH_TOKEN": "auth_token"},
        ("exec-ingest", "mlpipe-database"): {"MLPIPE_DB_PASSWORD": "password"},
        ("exec-deploy", "mlpipe-gitops"): {"GITOPS_TOKEN": "token"},
        ("exec-gate", "mlpipe-alerts"): webhook,
        ("exec-promote", "mlpipe-alerts"): webhook,
        ("exec-notify", "mlpipe-alerts"): webhook,
    }
    # By reference only: no credential, nor a Secret's name as a value, in the parameters.
    assert "AWS_SECRET_ACCESS_KEY" not in str(spec["root"]["inputDefinitions"])


def _pod_resources(container: dict) -> dict:
    """A compiled executor's requests and limits, as the run config writes them."""
    resources = container["resources"]
    return {
        kind: {
            unit: resources[f"resource{unit.capitalize()}{kind.capitalize()[:-1]}"]
            for unit in ("cpu", "memory")
        }
        for kind in ("requests", "limits")
    }


def test_each_step_has_requests_and_limits_and_tune_and_train_get_more():
    from components.common.settings.resources import resources_of

    spec = compiled_spec()
    for name, executor in spec["deploymentSpec"]["executors"].items():
        step = name.removeprefix("exec-").replace("-", "_")
        resources = executor["container"]["resources"]
        assert _pod_resources(executor["container"]) == resources_of(step), name
        assert resources["cpuRequest"] <= resources["cpuLimit"], name
        assert resources["memoryRequest"] <= resources["memoryLimit"], name
    default = spec["deploymentSpec"]["executors"]["exec-validate"]["container"]["resources"]
    for bigger in ("exec-tune", "exec-train"):
        resources = spec["deploymentSpec"]["executors"][bigger]["container"]["resources"]
        assert resources["memoryLimit"] > default["memoryLimit"], bigger
        assert resources["cpuLimit"] > default["cpuLimit"], bigger


def test_only_the_steps_that_talk_to_the_network_are_retried_with_backoff():
    spec = compiled_spec()
    tasks = {
        **exit_handler_tasks(spec),
        **training_tasks(spec),
        **spec["components"]["comp-condition-3"]["dag"]["tasks"],
        **spec["root"]["dag"]["tasks"],
    }
    retried = {name: task["retryPolicy"] for name, task in tasks.items() if "retryPolicy" in task}
    assert set(retried) == {"ingest", "register", "deploy", "promote"}
    for policy in retried.values():
        assert policy["maxRetryCount"] == 2
        assert policy["backoffDuration"] == "15s" and policy["backoffFactor"] == 2.0


def test_no_cached_step_can_reuse_a_result_of_other_data_behind_the_same_uri():
    """Kubeflow's cache keys a step by its parameters and the names of its input artifacts, not
    their bytes. Ingest is never cached, so each run's data is a new artifact; every step that
    may be cached reads it, directly or through another step, so none can match a run on other
    data (the step runner's content keys cover the rest: test_step_cache)."""
    tasks = training_tasks(compiled_spec())

    def upstream(name: str) -> set[str]:
        found = set()
        for parent in tasks[name].get("dependentTasks", []):
            found |= {parent, *upstream(parent)}
        return found

    cached = [name for name, task in tasks.items() if task.get("cachingOptions") != {}]
    assert cached, "no cached step: the test would check nothing"
    for name in cached:
        assert "ingest" in upstream(name), f"{name} may be cached without reading ingest's data"


def test_mlpipe_run_hands_kfp_local_the_spec_without_retries_and_keeps_them_in_the_file():
    """kfp.local honours retry policies: a user error in ingest would run three times, with
    backoff, before the one-line error. `mlpipe run` runs the spec without them."""
    import yaml

    from pipelines.kfp_resources import read_spec
    from pipelines.local_run import without_retries

    text = COMPILED_PIPELINE.read_text()
    assert text.count("retryPolicy:") == 4
    local = without_retries(COMPILED_PIPELINE)
    assert "retryPolicy" not in local
    pipeline, platform = read_spec(COMPILED_PIPELINE)
    local_pipeline, local_platform = list(yaml.safe_load_all(local))
    assert local_platform == platform
    for component in pipeline["components"].values():
        for task in component.get("dag", {}).get("tasks", {}).values():
            task.pop("retryPolicy", None)
    assert local_pipeline == pipeline


def test_the_monitoring_spec_gives_its_own_steps_and_the_nested_training_the_same_settings():
    from components.common.settings.resources import resources_of
    from pipelines.kfp_resources import read_spec
    from pipelines.monitoring_pipeline import COMPILED_PIPELINE as MONITORING_PIPELINE

    spec, _ = read_spec(MONITORING_PIPELINE)
    executors = _platform_executors(MONITORING_PIPELINE)
    assert set(executors) == set(spec["deploymentSpec"]["executors"])
    assert {"exec-monitor", "exec-retraining-mode", "exec-tune"} <= set(executors)
    for name, executor in executors.items():
        assert "mlpipe-object-store" in _secrets(executor), name
        resources = spec["deploymentSpec"]["executors"][name]["container"]["resources"]
        step = name.removeprefix("exec-").replace("-", "_")
        assert resources["resourceMemoryLimit"] == resources_of(step)["limits"]["memory"], name
    assert _secrets(executors["exec-monitor"])["mlpipe-alerts"] == {
        "MLPIPE_ALERT_WEBHOOK_URL": "webhook_url"
    }


def test_mlpipe_compile_with_a_config_gives_the_pods_its_resources(tmp_path):
    """The training spec, the monitoring spec's nested training and the batch-prediction spec
    carry the config's requests and limits; steps it does not name keep theirs."""
    from components.common.settings.resources import ResourcesConfig, resources_of
    from pipelines import batch_prediction_pipeline, monitoring_pipeline
    from pipelines.kfp_resources import read_spec

    resources = ResourcesConfig.model_validate(
        {
            "default": {"requests": {"memory": "1536Mi"}},
            "tune": {"requests": {"cpu": 3}, "limits": {"cpu": "6", "memory": "12Gi"}},
        }
    )
    compiled = {
        "training": compile_pipeline(tmp_path / "training.yaml", resources=resources),
        "monitoring": monitoring_pipeline.compile_pipeline(
            tmp_path / "monitoring.yaml", resources=resources
        ),
    }
    batch = batch_prediction_pipeline.compile_pipeline(tmp_path / "batch.yaml", resources=resources)
    (batch_executor,) = read_spec(batch)[0]["deploymentSpec"]["executors"].values()
    assert _pod_resources(batch_executor["container"]) == resources_of("batch_predict", resources)
    assert _pod_resources(batch_executor["container"])["requests"]["memory"] == "1536Mi"
    for pipeline, path in compiled.items():
        executors = read_spec(path)[0]["deploymentSpec"]["executors"]
        assert _pod_resources(executors["exec-tune"]["container"]) == {
            "requests": {"cpu": "3", "memory": "1536Mi"},
            "limits": {"cpu": "6", "memory": "12Gi"},
        }, pipeline
        for name, executor in executors.items():
            step = name.removeprefix("exec-").replace("-", "_")
            assert _pod_resources(executor["container"]) == resources_of(step, resources), name
            assert _pod_resources(executor["container"])["requests"]["memory"] == "1536Mi", name
    # The checked-in spec is untouched: a config changes only the file it is compiled into.
    assert read_spec(COMPILED_PIPELINE)[0] != read_spec(compiled["training"])[0]
    assert COMPILED_PIPELINE.read_text() == compile_pipeline(tmp_path / "again.yaml").read_text()
