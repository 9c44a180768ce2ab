"""A small world for the monitor's tests: a champion with a reference, a prediction log, labels.

The champion predicts `yes` when x1 > 0 (probability_yes = sigmoid(2 x1)); the log's rows are drawn
like its training rows unless a test shifts them.
The reference is stored as the version's reference.json, as register stores it, and read back
by ModelRegistry.reference.
"""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from components.common.profile import profile_frame
from components.common.registry import ModelRegistry

MODEL = "churn"
CLASSES = ["no", "yes"]
SCHEMA = {
    "target": "y",
    "task": "classification",
    "classes": CLASSES,
    "features": [
        {"name": "x1", "kind": "numeric"},
        {"name": "x2", "kind": "numeric"},
        {"name": "color", "kind": "categorical"},
    ],
}
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def rows(n: int, seed: int, shift: float = 0.0, shift_x2: float = 0.0, colors=None) -> pd.DataFrame:
    """n rows like the training data; `shift` moves x1 (and so the predictions)."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(shift, 1.0, n)
    frame = pd.DataFrame(
        {
            "x1": x1,
            "x2": rng.normal(shift_x2, 1.0, n),
            "color": rng.choice(colors or ["red", "green", "blue"], n),
        }
    )
    probability = 1 / (1 + np.exp(-2 * x1))
    frame["prediction"] = np.where(probability > 0.5, "yes", "no")
    frame["probability_no"] = 1 - probability
    frame["probability_yes"] = probability
    # The truth agrees with the model as often as its confidence says (calibrated).
    frame["y"] = np.where(rng.random(n) < probability, "yes", "no")
    return frame


def _held_out_accuracy() -> dict:
    """The champion's held-out accuracy with a normal-approximation interval."""
    test = rows(600, seed=9)
    value = float((test["prediction"] == test["y"]).mean())
    spread = 1.96 * float(np.sqrt(value * (1 - value) / len(test)))
    return {
        "value": value,
        "low": value - spread,
        "high": value + spread,
        "level": 0.95,
        "rows": 600,
    }


def reference(train: pd.DataFrame, schema: dict) -> dict:
    profile = profile_frame(
        train,
        schema,
        predictions=train["prediction"],
        probabilities=train[["probability_no", "probability_yes"]].to_numpy(),
    )
    return {
        "version": 1,
        "profile": profile,
        "metrics": {"accuracy": _held_out_accuracy()},
        "task": "classification",
        "classes": CLASSES,
        "positive_class": "yes",
        "threshold": 0.5,
        "rows": {"train": len(train), "test": 600},
    }


def champion(store: Path, data_watermark: dict | None = None) -> ModelRegistry:
    """A registry whose champion v1 has a reference (reference.json) and a fitted model."""
    train = rows(3000, seed=1)
    model = LogisticRegression().fit(train[["x1", "x2"]], train["y"])
    registry = ModelRegistry(str(store), MODEL)
    schema = {**SCHEMA, "features": SCHEMA["features"][:2]} if data_watermark else SCHEMA
    metadata = {"schema": schema, "data": {"watermark": data_watermark} if data_watermark else {}}
    reference_bytes = json.dumps(reference(train, schema)).encode()
    version = registry.register(model, metadata, {"reference.json": reference_bytes})
    registry.promote(version.version)
    return registry


def write_log(log: Path, frame: pd.DataFrame, start: datetime, name: str = "part-0") -> None:
    """The rows as a prediction log file of one day, a second apart from `start`."""
    frame = frame.drop(columns=["y"]).copy()
    frame.insert(0, "time", [start + timedelta(seconds=i) for i in range(len(frame))])
    frame.insert(0, "row", 0)
    frame.insert(0, "request_id", [f"{name}-{i}" for i in range(len(frame))])
    frame.insert(3, "model_version", "v1")
    folder = log / f"model={MODEL}" / f"date={start.date().isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / f"{name}.parquet", index=False)


def write_labels(labels: Path, frame: pd.DataFrame, name: str = "part-0") -> None:
    """Labels for some log rows: request_id, row, label, time."""
    folder = labels / f"model={MODEL}" / f"date={NOW.date().isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "request_id": [f"{name}-{i}" for i in range(len(frame))],
            "row": 0,
            "label": frame["y"].to_numpy(),
            "time": NOW,
        }
    ).to_parquet(folder / "part-labels.parquet", index=False)
