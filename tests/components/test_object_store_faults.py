"""The object store goes away for a while (the S3 server stopped, then started again): the model
registry and the ingest step retry, then succeed; a store that stays away fails in one line.

A real S3 server (moto) on 127.0.0.1, stopped and started again on the same port: moto keeps its
buckets in the process, so the store comes back with its objects, as a restarted MinIO would.
botocore's own retries are turned off here (AWS_MAX_ATTEMPTS=1): with them, a call on a refused
connection already retries for several seconds with random backoff, which would hide a short
outage, or not, by chance. Without them, what rides out the outage is our retry alone.
"""

import socket
import threading
import uuid

import pytest
from sklearn.dummy import DummyClassifier

from components.common import retry
from components.common.lake_source import resolve_source
from components.common.registry import ModelRegistry, StoreUnavailable
from components.ingest.logic import read_source

pytestmark = pytest.mark.faults

SCHEMA = {"target": "y", "task": "classification", "features": [{"name": "x", "kind": "numeric"}]}
# How long the store stays away: within the default backoff (0.5 + 1 + 2 s before the fourth
# attempt), longer than one attempt.
OUTAGE_SECONDS = 2.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class BouncingS3:
    """A moto S3 server that can be stopped and started again on the same port."""

    def __init__(self):
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = None
        self._lock = threading.Lock()
        self._timers: list[threading.Timer] = []

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        with self._lock:
            if self._server is None:
                server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
                server.start()
                self._server = server

    def stop(self) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.stop()
            # stop() only ends the accept loop: close the listening socket too, so that
            # connections are refused as they are when a server is down.
            server._server.server_close()

    def start_after(self, seconds: float) -> None:
        timer = threading.Timer(seconds, self.start)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
            timer.join()
        self.stop()


@pytest.fixture
def store(monkeypatch):
    """The bouncing server, and an s3fs filesystem on it for setting up and checking (a fresh
    instance each time it is asked for: no cached listing, no pooled connection)."""
    import s3fs

    for name, value in {
        "AWS_ENDPOINT_URL": None,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_RETRY_MODE": "legacy",
    }.items():
        if value is not None:
            monkeypatch.setenv(name, value)
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    server = BouncingS3()
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    server.start()
    try:
        yield server, lambda: s3fs.S3FileSystem(skip_instance_cache=True)
    finally:
        server.close()


def _bucket(filesystem, prefix: str) -> str:
    # moto keeps every bucket for the whole test session (in every server it starts): a new name
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    filesystem().mkdir(name)
    return name


def _registry(bucket: str) -> ModelRegistry:
    # A fresh filesystem: the registry meets the outage on its very first call.
    return ModelRegistry(f"s3://{bucket}", "churn", {"skip_instance_cache": True})


def _model(answer: str):
    return DummyClassifier(strategy="constant", constant=answer).fit([[0], [1]], ["no", "yes"])


def _retry_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if "; retry " in line]


def test_a_registration_rides_out_a_store_restart(store, capsys):
    server, filesystem = store
    bucket = _bucket(filesystem, "models-restart")
    server.stop()
    server.start_after(OUTAGE_SECONDS)

    made = _registry(bucket).register(_model("yes"), {"schema": SCHEMA})

    assert made.version == "v1"
    assert _retry_lines(capsys), "the outage was not met: nothing was retried"
    again = _registry(bucket)
    assert again.versions() == ["v1"]
    model, metadata = again.load("v1")
    assert metadata["version"] == "v1" and model.predict([[0]])[0] == "yes"
    assert set(again.verified_files("v1")) == {"model.joblib"}


@pytest.mark.parametrize("operation", ["load", "aliases", "promote"])
def test_reading_and_promoting_ride_out_a_store_restart(store, capsys, operation):
    server, filesystem = store
    bucket = _bucket(filesystem, "models-read")
    setup = _registry(bucket)
    setup.register(_model("no"), {"schema": SCHEMA})
    setup.register(_model("yes"), {"schema": SCHEMA})
    setup.promote("v1")
    server.stop()
    server.start_after(OUTAGE_SECONDS)

    registry = _registry(bucket)
    if operation == "load":
        model, metadata = registry.load("champion")
        assert metadata["version"] == "v1" and model.predict([[0]])[0] == "no"
    elif operation == "aliases":
        assert registry.aliases() == {"champion": "v1"}
    else:
        assert registry.promote("v2")["version"] == "v2"
        assert _registry(bucket).alias("champion")["history"][0]["version"] == "v1"
    assert _retry_lines(capsys)


def test_a_store_that_stays_away_fails_in_one_line_and_registers_nothing(
    store, capsys, monkeypatch
):
    monkeypatch.setattr(retry, "ATTEMPTS", 3)
    monkeypatch.setattr(retry, "BASE_SECONDS", 0.05)
    server, filesystem = store
    bucket = _bucket(filesystem, "models-gone")
    server.stop()

    with pytest.raises(StoreUnavailable) as caught:
        _registry(bucket).register(_model("yes"), {"schema": SCHEMA})

    message = str(caught.value)
    assert "\n" not in message
    assert f"model store 's3://{bucket}'" in message and "after 3 attempts" in message
    assert "EndpointConnectionError" in message
    assert len(_retry_lines(capsys)) == 2
    server.start()
    assert filesystem().ls(bucket) == []
    assert _registry(bucket).versions() == []


def test_ingest_reads_a_lake_through_store_restarts(store, tmp_path, capsys):
    from pipelines.demo_data import write_arrests_lake

    server, filesystem = store
    lake, _ = write_arrests_lake(tmp_path / "arrests")
    setup = filesystem()
    bucket = _bucket(filesystem, "lake-restart")
    setup.put(str(lake), f"{bucket}/arrests", recursive=True)
    expected, _ = read_source(resolve_source(f"s3://{bucket}/arrests"))

    # Away while the source is looked at, then again while it is read.
    server.stop()
    server.start_after(OUTAGE_SECONDS)
    source = resolve_source(f"s3://{bucket}/arrests")
    assert source.is_lake
    server.stop()
    server.start_after(OUTAGE_SECONDS)
    frame, watermark = read_source(source)

    assert len(frame) == len(expected) and list(frame.columns) == list(expected.columns)
    assert sorted(watermark["files"]) == sorted(read_source(source)[1]["files"])
    lines = _retry_lines(capsys)
    assert any(line.startswith(f"look at s3://{bucket}/arrests") for line in lines)
    assert any(line.startswith(f"read s3://{bucket}/arrests") for line in lines)
