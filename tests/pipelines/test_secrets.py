"""Credentials never reach parameters, logs, metadata or reports: a run config with a password in
a URL is refused before anything runs, and whatever writes config or URLs out hides them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from components.common.errors import PipelineInputError
from components.common.secrets import redact_url, redacted, url_password_place
from pipelines.config import load_config, pipeline_arguments
from tests.conftest import write_config

MLPIPE = str(Path(sys.executable).with_name("mlpipe"))
SECRET = "TopSecret123"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"postgresql://scott:{SECRET}@db.example:5432/sales",
            "postgresql://scott:***@db.example:5432/sales",
        ),
        (f"mysql+pymysql://ana:a@b/{SECRET}@db/x", "mysql+pymysql://ana:***@db/x"),
        (
            f"postgresql://scott@db/sales?sslmode=require&password={SECRET}",
            "postgresql://scott@db/sales?sslmode=require&password=***",
        ),
        (
            f"https://x-access-token:{SECRET}@github.com/o/r.git",
            "https://x-access-token:***@github.com/o/r.git",
        ),
        ("postgresql://scott@db/sales", "postgresql://scott@db/sales"),
        ("sqlite:////tmp/a.db", "sqlite:////tmp/a.db"),
        ("s3://bucket/lake", "s3://bucket/lake"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url_hides_the_password_and_only_it(url, shown):
    assert redact_url(url) == shown
    assert bool(url_password_place(url)) == (SECRET in url)


def test_redacted_walks_nested_config():
    config = {
        "data": {"etl": {"source": {"sql": {"url": f"postgresql://u:{SECRET}@h/d"}}}},
        "list": [f"https://u:{SECRET}@h/r", 3, None],
        "plain": f"a {SECRET} b",
    }
    out = json.dumps(redacted(config))
    assert out.count(SECRET) == 1  # only the plain text, which is no URL


def _etl_config(tmp_path, sql):
    return write_config(
        tmp_path / "run.yaml",
        **{"data.source": None, "data.etl": {"source": {"sql": sql}}, "output_root": "out"},
    )


def test_a_password_in_the_database_url_is_refused_at_load(tmp_path):
    url = f"postgresql://scott:{SECRET}@db.example/sales"
    path = _etl_config(tmp_path, {"url": url, "table": "people"})
    with pytest.raises(PipelineInputError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "key 'data.etl.source.sql.url'" in message
    assert "put the password in the environment" in message
    assert "postgresql://scott:***@db.example/sales" in message
    assert SECRET not in message


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("deploy.gitops_repo", f"https://bot:{SECRET}@git.example/ops.git"),
        ("data.source", f"s3://key:{SECRET}@bucket/lake"),
    ],
)
def test_a_password_in_any_url_of_the_config_is_refused(tmp_path, key, url):
    path = write_config(tmp_path / "run.yaml", **{key: url})
    with pytest.raises(PipelineInputError, match=f"key '{key}': put the password in") as caught:
        load_config(path)
    assert SECRET not in str(caught.value)


def test_the_password_env_is_a_name_in_the_parameters_never_the_password(tmp_path, monkeypatch):
    monkeypatch.setenv("DB_PASSWORD", SECRET)
    sql = {
        "url": "postgresql://scott@db.example/sales",
        "table": "t",
        "password_env": "DB_PASSWORD",
    }
    arguments = pipeline_arguments(load_config(_etl_config(tmp_path, sql)))
    assert arguments["data"]["etl"]["source"]["sql"]["password_env"] == "DB_PASSWORD"
    assert SECRET not in json.dumps(arguments)


def test_mlpipe_run_refuses_a_password_in_the_url_exits_2_and_writes_nothing(tmp_path):
    url = f"postgresql://scott:{SECRET}@db.example/sales"
    path = _etl_config(tmp_path, {"url": url, "table": "people"})
    result = subprocess.run(
        [MLPIPE, "run", "--config", str(path), "--no-serve"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "key 'data.etl.source.sql.url'" in lines[0], result.stderr
    assert "postgresql://scott:***@db.example/sales" in lines[0]
    assert lines[0].count("db.example") == 1 and "Value error" not in lines[0]
    assert SECRET not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists()
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "run.yaml"]
    assert written == []


def test_model_version_metadata_hides_url_passwords():
    from components.register.logic import lineage

    metadata = lineage(
        {},
        {"source_uri": f"postgresql://scott:{SECRET}@db/sales", "rows": 3},
        {},
        {},
        None,
        {"blessed": True, "reason": "ok"},
        {"deploy": {"gitops_repo": f"https://bot:{SECRET}@git.example/ops.git"}},
    )
    assert SECRET not in json.dumps(metadata)
    assert metadata["data"]["source_uri"] == "postgresql://scott:***@db/sales"
    assert metadata["data"]["rows"] == 3 and metadata["deployable"] is True
