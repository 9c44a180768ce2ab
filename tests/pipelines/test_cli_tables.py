"""Every table the CLI prints, as a user reads it at 80, 100 and 120 columns and in a pipe.

Key columns (version, aliases, blessed, created, metric and diff keys) never shrink: each
version's row shows them on its first line; long text (the gate's reason, diff values) wraps.
"""

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from sklearn.dummy import DummyClassifier

from components.common.registry import ModelRegistry
from pipelines import models_cli
from pipelines.cli import main

MLPIPE = str(Path(sys.executable).with_name("mlpipe"))
NAME = "arrests-release"
WIDTHS = (80, 100, 120)
METRICS = ("roc_auc", "f1", "balanced_accuracy", "log_loss")


def _gate(blessed: bool, reason: str, champion: str | None) -> dict:
    checks = [
        {"kind": "threshold", "name": "roc_auc >= 0.7", "passed": blessed, "detail": "..."},
        {"kind": "threshold", "name": "f1 >= 0.5", "passed": True, "detail": "..."},
        {"kind": "fairness", "name": "fairness gate", "passed": blessed, "detail": "..."},
    ]
    if champion:
        checks.append(
            {
                "kind": "champion",
                "name": f"roc_auc vs champion {champion}",
                "passed": blessed,
                "detail": "...",
            }
        )
    return {"blessed": blessed, "reason": reason, "checks": checks}


def _metadata(roc_auc: float, gate: dict, trials: int) -> dict:
    return {
        "metrics": {
            "roc_auc": roc_auc,
            "f1": roc_auc - 0.1,
            "balanced_accuracy": roc_auc - 0.05,
            "log_loss": 1 - roc_auc,
        },
        "config": {
            "model_family": "random_forest",
            "tuning": {
                "num_trials": trials,
                "space": {"random_forest": {"min_samples_leaf_fraction": [1, trials, 2 * trials]}},
            },
        },
        "data": {
            "rows": 5226,
            "source": f"s3://mlpipe-data/lake/arrests/snapshots/2026-11-{trials:02d}T19-30-00",
            "fingerprint": f"{trials:02d}" * 32,
        },
        "gate": gate,
    }


REASONS = {
    "v1": "blessed: meets every threshold and there is no champion yet",
    "v2": "not blessed: 0.6412 does not reach 0.7; roc_auc 0.6412 is worse than champion v1 "
    "(0.7801) by more than the margin 0.01; fairness: demographic parity difference 0.31 "
    "for group skin_colour exceeds 0.2",
    "v3": "blessed: meets every threshold and is not worse than champion v1",
}


@pytest.fixture
def store(tmp_path) -> str:
    """Three versions: v1 the old champion, v2 not blessed, v3 champion and candidate."""
    store = str(tmp_path / "models")
    registry = ModelRegistry(store, NAME)
    model = DummyClassifier(strategy="constant", constant="yes").fit([[0], [1]], ["no", "yes"])
    registry.register(model, _metadata(0.7801, _gate(True, REASONS["v1"], None), 4))
    registry.register(model, _metadata(0.6412, _gate(False, REASONS["v2"], "v1"), 8))
    registry.register(model, _metadata(0.8123, _gate(True, REASONS["v3"], "v1"), 16))
    registry.promote("v1")
    registry.promote("v3")
    registry.set_alias("candidate", "v3", "registered")
    return store


def _render(monkeypatch, width: int, *args: str) -> str:
    buffer = io.StringIO()
    console = Console(width=width, file=buffer, highlight=False, soft_wrap=True)
    monkeypatch.setattr(models_cli, "console", console)
    assert main(["models", *args]) == 0
    return buffer.getvalue()


def _assert_fits(output: str, width: int) -> None:
    for line in output.splitlines():
        assert len(line) <= width, f"wider than {width}: {line!r}\n{output}"


def _row(output: str, version: str) -> str:
    """The first line of a version's row in the list table."""
    rows = [line for line in output.splitlines() if re.search(rf"^\W*{version}\b", line)]
    assert rows, f"no row starts with {version}:\n{output}"
    return rows[0]


def _dates(store: str) -> dict[str, str]:
    registry = ModelRegistry(store, NAME)
    return {v: registry.metadata(v)["created"][:16].replace("T", " ") for v in registry.versions()}


def _column_text(output: str, column: int) -> str:
    """Column `column` (0: the first) of the tables, top to bottom, without spaces (undoes
    wrapping)."""
    cells = [line.split("│") for line in output.splitlines() if line.startswith("│")]
    return "".join(parts[column + 1].replace(" ", "") for parts in cells if len(parts) > column + 2)


def _words(text: str) -> list[str]:
    return re.findall(r"[\w.]+", text)


def _assert_list_is_readable(output: str, width: int, store: str) -> None:
    blessed = {"v1": "yes", "v2": "no", "v3": "yes"}
    for version, date in _dates(store).items():
        row = _row(output, version)
        assert date in row, f"{version}: no full date {date} in {row!r}\n{output}"
        assert re.search(rf"\b{blessed[version]}\b", row), f"{version}: blessed? {row!r}"
    assert "champion" in _row(output, "v3") and "candidate" in output
    assert "roc_auc=0.8123" in output and "roc_auc=0.6412" in output
    for reason in REASONS.values():  # wrapped, in the table or below it, but every word there
        for word in _words(reason):
            assert word in output, f"{word!r} of the reason is missing:\n{output}"
    _assert_fits(output, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_models_list_keeps_version_aliases_dates_and_blessed(monkeypatch, store, width):
    output = _render(monkeypatch, width, "list", "--store", store, "--name", NAME)
    _assert_list_is_readable(output, width, store)


@pytest.mark.parametrize("width", WIDTHS)
def test_models_diff_keeps_every_key_and_metric_value(monkeypatch, store, width):
    output = _render(monkeypatch, width, "diff", "v1", "v2", "--store", store, "--name", NAME)
    registry = ModelRegistry(store, NAME)
    differences = registry.diff("v1", "v2")
    assert set(differences["metrics"]) == set(METRICS)
    lines = output.splitlines()
    for section, rows in differences.items():
        for key, (left, right) in rows.items():
            line = next((line for line in lines if re.search(rf"\W{re.escape(key)}\W", line)), "")
            assert line, f"{section}: key {key} is not whole on any line:\n{output}"
            if section == "metrics":
                assert f"{left:.4f}" in line and f"{right:.4f}" in line, line
    for column, version in ((1, "v1"), (2, "v2")):  # other values wrap, but all of each is there
        text = _column_text(output, column)
        for rows in differences.values():
            for left, right in rows.values():
                value = left if version == "v1" else right
                value = f"{value:.4f}" if isinstance(value, float) else str(value)
                value = value.replace(" ", "")
                assert value in text, f"{version}: {value} is cut:\n{output}"
    header = next(line for line in lines if re.search(r"\bkey\b", line))
    assert "v1" in header and "v2" in header
    _assert_fits(output, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_models_show_stays_json_at_any_width(monkeypatch, store, width):
    output = _render(monkeypatch, width, "show", "v2", "--store", store, "--name", NAME)
    assert json.loads(output)["gate"]["reason"] == REASONS["v2"]


def test_models_list_in_a_pipe_is_80_columns_and_readable(store, tmp_path):
    environment = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    result = subprocess.run(
        [MLPIPE, "models", "list", "--store", store, "--name", NAME],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    _assert_list_is_readable(result.stdout, 80, store)
