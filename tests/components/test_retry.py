"""Which faults are retried, on what schedule, and what the retry line shows."""

import errno
import http.client
import socket

import aiohttp
import botocore.exceptions
import pytest
import requests
import urllib3.exceptions
from fsspec.exceptions import FSTimeoutError
from kfp_server_api.exceptions import ApiException

from components.common import retry
from components.common.errors import PipelineInputError
from components.common.retry import (
    backoff_delays,
    is_refused_before_processing,
    is_transient,
    retry_transient,
    retrying,
)


def client_error(status: int, code: str, operation: str = "PutObject"):
    """A botocore ClientError as botocore builds it from a parsed S3 answer."""
    return botocore.exceptions.ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} message"},
            "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": 4},
        },
        operation,
    )


class _Answer:
    """An HTTP answer as kfp_server_api's RESTResponse hands it to ApiException."""

    def __init__(self, status: int, reason: str):
        self.status, self.reason, self.data = status, reason, b'{"message": "m"}'

    def getheaders(self):
        return {"Content-Type": "application/json"}


def api_exception(status: int, reason: str = "Reason") -> ApiException:
    return ApiException(http_resp=_Answer(status, reason))


def translated(cause: BaseException, error: BaseException) -> BaseException:
    """`error` raised from `cause`, as s3fs raises its translations."""
    error.__cause__ = cause
    return error


def wrapped_from_none(cause: BaseException, error: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException:
            raise error from None
    except BaseException as raised:
        return raised


CONNECTION_KEY = aiohttp.client_reqrep.ConnectionKey(
    "store.local", 9, False, True, None, None, None
)

TRANSIENT = {
    "connection refused": ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
    "connection reset": ConnectionResetError(errno.ECONNRESET, "reset by peer"),
    "connection aborted": ConnectionAbortedError(errno.ECONNABORTED, "aborted"),
    "broken pipe": BrokenPipeError(errno.EPIPE, "broken pipe"),
    "timeout": TimeoutError("timed out"),
    "OSError ETIMEDOUT": OSError(errno.ETIMEDOUT, "timed out"),
    "OSError EHOSTUNREACH": OSError(errno.EHOSTUNREACH, "no route to host"),
    "OSError ENETUNREACH": OSError(errno.ENETUNREACH, "network unreachable"),
    "remote disconnected": http.client.RemoteDisconnected("closed without response"),
    "incomplete read": http.client.IncompleteRead(b"abc", 10),
    "botocore endpoint": botocore.exceptions.EndpointConnectionError(
        endpoint_url="http://127.0.0.1:9/bucket"
    ),
    "botocore connect timeout": botocore.exceptions.ConnectTimeoutError(
        endpoint_url="http://127.0.0.1:9"
    ),
    "botocore read timeout": botocore.exceptions.ReadTimeoutError(
        endpoint_url="http://127.0.0.1:9"
    ),
    "botocore connection closed": botocore.exceptions.ConnectionClosedError(
        endpoint_url="http://127.0.0.1:9"
    ),
    "S3 500": client_error(500, "InternalError"),
    "S3 503 SlowDown": client_error(503, "SlowDown"),
    "S3 429": client_error(429, "TooManyRequests"),
    "S3 RequestTimeout code": client_error(400, "RequestTimeout"),
    "S3 Throttling code": client_error(400, "Throttling"),
    "s3fs's OSError for a 503": translated(
        client_error(503, "SlowDown"), OSError(errno.EBUSY, "Please reduce your request rate")
    ),
    "s3fs's OSError for a 500": translated(
        client_error(500, "InternalError"), OSError(errno.EIO, "We encountered an error")
    ),
    "aiohttp connector": aiohttp.ClientConnectorError(
        CONNECTION_KEY, ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    ),
    "aiohttp server disconnected": aiohttp.ServerDisconnectedError(),
    "aiohttp payload": aiohttp.ClientPayloadError("Response payload is not completed"),
    "fsspec timeout": FSTimeoutError(),
    "KFP 500": api_exception(500, "Internal Server Error"),
    "KFP 503": api_exception(503, "Service Unavailable"),
    "KFP 429": api_exception(429, "Too Many Requests"),
    "urllib3 max retries": urllib3.exceptions.MaxRetryError(
        None, "/apis/v2beta1/runs", urllib3.exceptions.NewConnectionError(None, "refused")
    ),
    "urllib3 new connection": urllib3.exceptions.NewConnectionError(None, "refused"),
    "urllib3 protocol": urllib3.exceptions.ProtocolError(
        "Connection aborted.", http.client.RemoteDisconnected("closed")
    ),
    "requests connection": requests.ConnectionError("refused"),
    "requests timeout": requests.Timeout("read timed out"),
    "chained context": translated(ConnectionResetError("reset"), RuntimeError("while reading")),
}

NOT_TRANSIENT = {
    "ValueError": ValueError("bad value"),
    "KeyError": KeyError("column"),
    "TypeError": TypeError("a bug"),
    "PipelineInputError": PipelineInputError("data.source: no such file"),
    "FileNotFoundError": FileNotFoundError(errno.ENOENT, "missing"),
    "PermissionError": PermissionError(errno.EACCES, "denied"),
    "FileExistsError": FileExistsError(errno.EEXIST, "exists"),
    "OSError ENOSPC": OSError(errno.ENOSPC, "No space left on device"),
    "OSError EROFS": OSError(errno.EROFS, "Read-only file system"),
    "OSError EIO alone": OSError(errno.EIO, "I/O error"),
    "S3 403": client_error(403, "AccessDenied"),
    "S3 404": client_error(404, "NoSuchKey", "GetObject"),
    "S3 412": client_error(412, "PreconditionFailed"),
    "s3fs's FileNotFoundError for a 404": translated(
        client_error(404, "NoSuchKey"), FileNotFoundError("The specified key does not exist.")
    ),
    "s3fs's FileExistsError for If-None-Match": translated(
        client_error(412, "PreconditionFailed"), FileExistsError("At least one precondition")
    ),
    "KFP 400": api_exception(400, "Bad Request"),
    "KFP 404": api_exception(404, "Not Found"),
    "KFP 409": api_exception(409, "Conflict"),
    "KFP status 0 (a TLS failure)": ApiException(status=0, reason="SSLError\ncertificate"),
    "botocore TLS": botocore.exceptions.SSLError(endpoint_url="https://h", error="bad cert"),
    "requests TLS": requests.exceptions.SSLError("certificate verify failed"),
    "urllib3 retries ended on TLS": urllib3.exceptions.MaxRetryError(
        None, "/", urllib3.exceptions.SSLError("certificate verify failed")
    ),
    "DNS": socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
    "aiohttp DNS": aiohttp.ClientConnectorDNSError(
        CONNECTION_KEY, socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    ),
    "a translation raised from None": wrapped_from_none(
        ConnectionRefusedError("refused"), PipelineInputError("cannot reach it")
    ),
    "a bug while handling a fault": translated(ConnectionResetError("reset"), KeyError("x")),
    "KeyboardInterrupt": KeyboardInterrupt(),
}


@pytest.mark.parametrize("name", TRANSIENT)
def test_transient_faults_are_recognised(name):
    assert is_transient(TRANSIENT[name])


@pytest.mark.parametrize("name", NOT_TRANSIENT)
def test_deterministic_errors_are_not_transient(name):
    assert not is_transient(NOT_TRANSIENT[name])


def test_a_request_is_known_unprocessed_only_when_refused_or_503_or_429():
    assert is_refused_before_processing(TRANSIENT["connection refused"])
    assert is_refused_before_processing(TRANSIENT["urllib3 max retries"])
    assert is_refused_before_processing(TRANSIENT["KFP 503"])
    assert is_refused_before_processing(TRANSIENT["KFP 429"])
    for name in ("KFP 500", "connection reset", "urllib3 protocol", "timeout", "requests timeout"):
        assert not is_refused_before_processing(TRANSIENT[name]), name
    assert not is_refused_before_processing(NOT_TRANSIENT["KFP 400"])


class Flaky:
    """Fails with `errors` one after the other, then returns "done"."""

    def __init__(self, *errors: BaseException):
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        self.args = (args, kwargs)
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def test_the_backoff_doubles_up_to_the_cap():
    assert backoff_delays(6, 0.5, 8.0) == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert backoff_delays(8, 0.5, 3.0) == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0]
    assert backoff_delays(1, 0.5, 8.0) == []
    # The defaults: an object store or an API pod restarting (15 to 25 s of waiting in all).
    assert 15 <= sum(backoff_delays()) <= 25


def test_transient_faults_are_retried_until_the_call_succeeds(capsys):
    slept = []
    flaky = Flaky(ConnectionRefusedError("refused"), client_error(503, "SlowDown"))
    result = retry_transient("read s3://b/x", flaky, 1, key="v", sleep=slept.append)
    assert result == "done"
    assert flaky.calls == 3 and flaky.args == ((1,), {"key": "v"})
    assert slept == [0.5, 1.0]
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "read s3://b/x: ConnectionRefusedError: refused; retry 1 of 5 in 0.5 s",
        "read s3://b/x: ClientError: An error occurred (SlowDown) when calling the PutObject "
        "operation: SlowDown message; retry 2 of 5 in 1.0 s",
    ]


def test_after_the_last_attempt_the_last_error_is_raised():
    slept = []
    errors = [ConnectionResetError(f"reset {n}") for n in range(4)]
    flaky = Flaky(*errors)
    with pytest.raises(ConnectionResetError) as caught:
        retry_transient("x", flaky, attempts=4, base_seconds=1, cap_seconds=3, sleep=slept.append)
    assert caught.value is errors[-1]
    assert flaky.calls == 4
    assert slept == [1, 2, 3]


def test_the_module_constants_are_the_defaults(monkeypatch):
    monkeypatch.setattr(retry, "ATTEMPTS", 3)
    monkeypatch.setattr(retry, "BASE_SECONDS", 0.25)
    slept = []
    flaky = Flaky(*[TimeoutError()] * 5)
    with pytest.raises(TimeoutError):
        retry_transient("x", flaky, sleep=slept.append)
    assert flaky.calls == 3 and slept == [0.25, 0.5]


@pytest.mark.parametrize("name", ["ValueError", "PipelineInputError", "S3 404", "KFP 400"])
def test_a_deterministic_error_is_raised_at_once(name, capsys):
    slept = []
    error = NOT_TRANSIENT[name]
    flaky = Flaky(error)
    with pytest.raises(type(error)) as caught:
        retry_transient("x", flaky, sleep=slept.append)
    assert caught.value is error
    assert flaky.calls == 1 and slept == []
    assert capsys.readouterr().err == ""


def test_a_custom_classifier_decides_what_is_retried():
    slept = []
    flaky = Flaky(TRANSIENT["KFP 500"])
    with pytest.raises(ApiException):
        retry_transient("x", flaky, sleep=slept.append, transient=is_refused_before_processing)
    assert flaky.calls == 1 and slept == []


def test_the_retry_line_shows_no_password_and_is_one_line(capsys):
    secret = "s3cr3t-Pa55"
    flaky = Flaky(
        ConnectionRefusedError(f"cannot connect to\nhttp://admin:{secret}@store.local:9000/bucket")
    )
    retry_transient(f"read https://me:{secret}@lake.local/data", flaky, sleep=lambda _: None)
    err = capsys.readouterr().err
    assert secret not in err
    assert err.count("\n") == 1 and "admin:***@store.local" in err and "me:***@lake.local" in err


def test_the_decorator_retries_like_the_function():
    slept = []
    flaky = Flaky(ConnectionResetError("reset"))

    @retrying("list", sleep=slept.append)
    def listing(prefix):
        return flaky(prefix)

    assert listing("v") == "done"
    assert flaky.calls == 2 and slept == [0.5]


def test_a_long_message_is_cut_after_its_password_is_hidden(capsys):
    secret = "s3cr3t-Pa55"
    # Cut 4 characters into the password if it were cut before it is hidden.
    padding = "x" * (retry.MESSAGE_CHARS - 19)
    flaky = Flaky(ConnectionResetError(f"{padding} http://admin:{secret}@store.local:9000/b"))
    retry_transient("read", flaky, sleep=lambda _: None)
    err = capsys.readouterr().err
    assert "s3cr" not in err and "…" in err
