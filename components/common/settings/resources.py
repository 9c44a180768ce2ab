"""The run config's `resources:` section: the CPU and memory each step's pod requests and may
use on a cluster, as Kubernetes quantities, over the defaults below.

    resources:
      default: {requests: {memory: 2Gi}}      # every step
      tune:                                   # one step (its name as in the run's step table)
        requests: {cpu: "4", memory: 8Gi}
        limits: {cpu: "8", memory: 16Gi}

Compiled into the spec (pipelines/pod_settings.py) by `mlpipe compile --config`, `mlpipe submit`
and `mlpipe run` (whose run folder keeps the spec to upload); the checked-in specs carry the
defaults. A key that names no step, a quantity Kubernetes would refuse, or a request above its
limit is an error naming the key: a typo must not leave a pod with the default it meant to change.
"""

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, RootModel, field_validator, model_validator

# The steps of the training, monitoring and batch-prediction pipelines, by their component's
# name.
STEPS = (
    "plan",
    "ingest",
    "validate",
    "prepare",
    "bias",
    "tune",
    "train",
    "evaluate",
    "fairness",
    "gate",
    "export_onnx_model",
    "register",
    "run_report",
    "deploy",
    "promote",
    "notify",
    "monitor",
    "retraining_mode",
    "batch_predict",
)
KINDS = ("requests", "limits")

# The search and the fit hold the transformed training rows several times over and use every
# CPU they get; the rest read, check and write.
DEFAULT_RESOURCES = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"cpu": "1", "memory": "2Gi"},
}
STEP_RESOURCES = {
    "tune": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}},
    "train": {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"cpu": "2", "memory": "8Gi"}},
    "prepare": {"requests": {"memory": "2Gi"}, "limits": {"memory": "4Gi"}},
    "monitor": {"requests": {"memory": "2Gi"}, "limits": {"memory": "4Gi"}},
    "batch_predict": {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    },
}

# Kubernetes' quantity syntax for the two resources (no exponent forms: nobody writes 1e3 CPUs).
_CPU = re.compile(r"^(\d+(\.\d+)?|\.\d+)m?$")
_MEMORY = re.compile(r"^(\d+(\.\d+)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


class Quantities(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpu: str | None = None
    memory: str | None = None

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _as_text(cls, value):
        # cpu: 2 in YAML is a number; Kubernetes quantities are text.
        return (
            str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
        )

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, value):
        if value is not None and not _CPU.match(value):
            raise ValueError("not a CPU quantity (e.g. 500m, 2)")
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value):
        if value is not None and not _MEMORY.match(value):
            raise ValueError("not a memory quantity (e.g. 512Mi, 4Gi)")
        return value


class PodResources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: Quantities = Quantities()
    limits: Quantities = Quantities()


# A subscript with a tuple is the Literal of its items.
StepName = Literal[("default", *STEPS)]


class ResourcesConfig(RootModel[dict[StepName, PodResources]]):
    """`default` and any step's name -> its requests and limits; what is unset keeps the
    defaults."""

    root: dict[StepName, PodResources] = {}

    @model_validator(mode="after")
    def _requests_within_limits(self):
        if not self.root:  # the defaults are within their limits (a test checks them)
            return self
        for step in STEPS:
            for resource in ("cpu", "memory"):
                request, limit = (resources_of(step, self)[kind][resource] for kind in KINDS)
                if _amount(request) > _amount(limit):
                    raise ValueError(
                        f"{step}: the {resource} request {request} is above its limit {limit}"
                    )
        return self


def _amount(quantity: str):
    # Kubernetes' own parser (from the kubernetes client, which kfp installs), loaded only when
    # a config sets resources.
    from kubernetes.utils.quantity import parse_quantity

    return parse_quantity(quantity)


def resources_of(
    step: str, config: ResourcesConfig | None = None
) -> dict[Literal["requests", "limits"], dict[str, str]]:
    """The step's requests and limits: the defaults, the step's defaults, then the config's
    `default`, then the config's entry for the step."""
    layers = [DEFAULT_RESOURCES, STEP_RESOURCES.get(step, {})]
    if config is not None:
        for name in ("default", step):
            if name in config.root:
                layers.append(config.root[name].model_dump(exclude_none=True))
    merged: dict = {kind: {} for kind in KINDS}
    for layer in layers:
        for kind in KINDS:
            merged[kind].update(layer.get(kind, {}))
    return merged
