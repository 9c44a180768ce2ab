"""`mlpipe monitor` as a user runs it: the decision, the reasons and where the results are; exit
codes 0 (any decision), 3 (--fail-on), 2 (bad input, one line)."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main
from tests.components.monitor_fixtures import MODEL, champion, rows, write_log


@pytest.fixture
def config(tmp_path) -> Path:
    root = tmp_path / "out"
    champion(root / "models")
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model_name": MODEL,
                "data": {"source": str(tmp_path / "lake")},
                "target": "y",
                "positive_class": "yes",
                "output_root": str(root),
                "monitoring": {"metric": "accuracy"},
            }
        )
    )
    return path


def _log(config: Path, **shift) -> None:
    start = datetime.now(UTC) - timedelta(hours=2)
    write_log(config.parent / "out" / "predictions", rows(1200, seed=4, **shift), start)


def test_prints_the_decision_the_reasons_and_where_the_results_are(config, capsys):
    _log(config, shift_x2=0.8)
    assert main(["monitor", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "Monitored churn v1: 1200 rows (0 labelled) from prediction_log" in out
    assert "decision   warn" in out
    assert "x2 (PSI" in out
    result = Path(out.split("result     ", 1)[1].split()[0])
    report = Path(out.split("report     ", 1)[1].split()[0])
    assert result.is_file() and report.is_file()
    assert result.parent.parent == config.parent / "out" / "monitoring" / MODEL / "runs"


def test_fail_on_exits_3_when_the_decision_is_at_least_that(config, capsys):
    _log(config, shift_x2=0.8)
    assert (
        main(["monitor", "--config", str(config), "--fail-on", "warn", "--window-days", "1"]) == 3
    )
    assert (
        main(["monitor", "--config", str(config), "--fail-on", "retrain", "--window-days", "1"])
        == 0
    )


def test_an_unknown_feature_is_one_line_and_exit_2(config, capsys):
    _log(config)
    code = main(["monitor", "--config", str(config), "--set", "monitoring.features=[x1, age]"])
    assert code == 2
    err = capsys.readouterr().err
    assert "monitoring.features: 'age' is not a feature of model 'churn' v1" in err
    assert "Traceback" not in err
    assert not (config.parent / "out" / "monitoring" / MODEL / "runs").exists()


def test_an_empty_window_is_exit_2_naming_the_log(config, capsys):
    assert main(["monitor", "--config", str(config)]) == 2
    assert "no records of model 'churn'" in capsys.readouterr().err


def test_an_unknown_metric_is_refused_at_load(config, capsys):
    assert main(["monitor", "--config", str(config), "--set", "monitoring.metric=auc"]) == 2
    assert "'auc' is not a metric" in capsys.readouterr().err
