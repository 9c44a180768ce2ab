"""KFP component: decide the run's kind, full or incremental (components.common.retraining)."""

from kfp import dsl
from kfp.dsl import Artifact, Output

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def plan(
    model_name: str,
    model_store_uri: str,
    training_mode: str,
    trigger: str,
    retraining_config: dict,
    data_config: dict,
    serving_config: dict,
    since_watermark: str,
    plan: Output[Artifact],
) -> str:
    """Decides whether this run trains in full or updates the champion incrementally, and what
    it reads; the steps that act on it (ingest, tune, train, register) read the plan.

    It reads the registry and the lake: never served from a cache.

    The mode is the plain return value ("Output"): kfp.local (2.17) silently takes a dsl.If on a
    NamedTuple field as false.

    Args:
        model_name: the model in the store.
        model_store_uri: the model store's root.
        training_mode: full or incremental; empty: the run config's `retraining.mode`.
        trigger: what started the run (manual, monitor or schedule), recorded in the lineage.
        retraining_config: the run config's `retraining:` section: mode, full_every,
            full_on_relation_change, window_partitions, fallback, include_prediction_log.
        data_config: the `data:` section (the lake whose new files an incremental run reads).
        serving_config: the `serving:` section (the prediction log and the labels).
        since_watermark: a full run's `data.since_watermark` (JSON), passed on as given.
        plan: JSON: mode, reason, parent, family, rule, what to read (see
            components.common.retraining.plan_training).

    Returns:
        The mode: full, incremental, or skip (nothing new to retrain on: no step runs after
        this one and nothing is registered).
    """
    from components.common.io import write_json
    from components.common.retraining import describe, plan_training
    from components.common.step import step_summary, user_errors

    with user_errors("plan"):
        decided = plan_training(
            model_store_uri,
            model_name,
            training_mode,
            trigger,
            retraining_config,
            data_config,
            serving_config,
            since_watermark,
        )
    write_json(plan.path, decided)
    step_summary("plan", describe(decided))
    return decided["mode"]
