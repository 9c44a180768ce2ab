"""Retries for transient faults only: an object store or an API server that is briefly away.

A transient fault is one that the same call can get past a little later: a refused or reset
connection, a timeout, an HTTP 5xx or 429 (S3's SlowDown, a KFP API pod restarting). Those are
retried with exponential backoff and a cap (`retry_transient`). Everything else is deterministic
and fails at once, because waiting cannot fix it: bad config (PipelineInputError), a missing
object or a refused permission (FileNotFoundError, PermissionError, HTTP 403/404/412), an HTTP
400, a TLS certificate that does not verify, a name that does not resolve, a bug (ValueError,
KeyError, TypeError...).

The libraries' exceptions (botocore, aiohttp, fsspec, kfp_server_api, urllib3, requests) are
recognised by module and class name along their class hierarchy, so this module imports none of
them: the shared layer stays cheap to import, and a library that is not installed cannot raise.
Wrapped errors are followed through `__cause__`, and `__context__` unless the wrapper was raised
`from None` (a deliberate translation, such as a PipelineInputError, is the final word): s3fs, for
example, raises an OSError(EBUSY) whose cause is botocore's ClientError for an HTTP 503.
"""

import errno
import functools
import sys
import time
from collections.abc import Callable

from components.common.errors import PipelineInputError
from components.common.secrets import redact_text

# Six attempts, waiting 0.5, 1, 2, 4 and 8 s between them: 15.5 s of waiting in all, plus the
# attempts' own time (s3fs and botocore retry a refused connection a few times themselves, for a
# few seconds). That covers an S3-compatible server or a KFP API pod restarting (a few seconds to
# about 20 s), and a store or API server that is down for good fails within about half a minute
# of our own waiting instead of hanging on.
ATTEMPTS = 6
BASE_SECONDS = 0.5
CAP_SECONDS = 8.0
# The retry line shows this much of the error's message: enough to recognise it, one line.
MESSAGE_CHARS = 300

_CONNECTION_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EPIPE,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
    }
)
# Deterministic whatever wraps them or whatever they wrap: retrying cannot change the answer.
_NEVER = (
    PipelineInputError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    ValueError,
    TypeError,
    LookupError,
    AttributeError,
    AssertionError,
    NameError,
    ArithmeticError,
    NotImplementedError,
)
# Classes that are transient whatever their details (module, class name).
_TRANSIENT_CLASSES = frozenset(
    {
        ("http.client", "RemoteDisconnected"),
        ("http.client", "IncompleteRead"),
        ("botocore.exceptions", "EndpointConnectionError"),
        ("botocore.exceptions", "ConnectTimeoutError"),
        ("botocore.exceptions", "ReadTimeoutError"),
        ("botocore.exceptions", "ConnectionClosedError"),
        ("aiohttp.client_exceptions", "ClientConnectionError"),
        ("aiohttp.client_exceptions", "ServerDisconnectedError"),
        ("aiohttp.client_exceptions", "ClientPayloadError"),
        ("fsspec.exceptions", "FSTimeoutError"),
        ("urllib3.exceptions", "MaxRetryError"),
        ("urllib3.exceptions", "NewConnectionError"),
        ("urllib3.exceptions", "ProtocolError"),
        ("urllib3.exceptions", "TimeoutError"),
        ("requests.exceptions", "ConnectionError"),
        ("requests.exceptions", "Timeout"),
    }
)
# A certificate that does not verify, or a host name that does not resolve, is configuration
# (a wrong endpoint, a missing CA bundle), though the libraries file them under connection errors
# (botocore's SSLError is a requests ConnectionError; aiohttp's ClientConnectorDNSError a
# ClientConnectionError).
_CONFIG_WORDS = ("SSL", "Certificate", "DNS", "gaierror", "InvalidURL", "InvalidSchema")
# S3 error codes that mean "busy or briefly broken, ask again".
_TRANSIENT_S3_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "ServiceUnavailable",
        "InternalError",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
    }
)


def _classes(error: BaseException) -> list[tuple[str, str]]:
    return [(klass.__module__, klass.__qualname__) for klass in type(error).__mro__]


def _transient_status(status) -> bool:
    return isinstance(status, int) and (status >= 500 or status == 429)


def _classify(error: BaseException) -> bool | None:
    """True or False when `error` itself decides; None to look at what it wraps."""
    if isinstance(error, _NEVER):
        return False
    classes = _classes(error)
    if any(word in name for _, name in classes for word in _CONFIG_WORDS):
        return False
    if ("kfp_server_api.exceptions", "ApiException") in classes:
        status = getattr(error, "status", None)
        if not status:
            # status 0 is what kfp_server_api raises for a TLS failure or a request it could not
            # build: configuration, not a fault of the moment.
            return False
        return _transient_status(status)
    if ("urllib3.exceptions", "MaxRetryError") in classes and getattr(
        error, "reason", None
    ) is not None:
        # urllib3 gave up on its own retries: what it last met decides (a refused connection,
        # too many 5xx answers), except a TLS failure, which is configuration.
        return _classify(error.reason) is not False
    if ("botocore.exceptions", "ClientError") in classes:
        response = getattr(error, "response", None) or {}
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = response.get("Error", {}).get("Code")
        return _transient_status(status) or code in _TRANSIENT_S3_CODES
    if any(klass in _TRANSIENT_CLASSES for klass in classes):
        return True
    if isinstance(error, ConnectionError | TimeoutError):  # refused, reset, aborted, broken pipe
        return True
    if isinstance(error, OSError) and error.errno in _CONNECTION_ERRNOS:
        return True
    return None


def is_transient(error: BaseException) -> bool:
    """Whether `error` is a fault of the moment that the same call may get past later.

    Follows `__cause__`, and `__context__` unless suppressed (`raise ... from None`), so a
    library's translation of a transient error (s3fs's OSError for an HTTP 503) still counts;
    an error that is deterministic itself (see `_NEVER`) is not transient whatever it wraps.
    """
    seen = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if not isinstance(current, Exception):  # KeyboardInterrupt, SystemExit: never retried
            return False
        verdict = _classify(current)
        if verdict is not None:
            return verdict
        if current.__cause__ is not None:
            current = current.__cause__
        elif not current.__suppress_context__:
            current = current.__context__
        else:
            return False
    return False


def is_refused_before_processing(error: BaseException) -> bool:
    """A transient error after which the request certainly was not acted on: the connection was
    refused, or the server answered 503 (unavailable) or 429 (too many requests).

    A call that creates something (a run, an upload) is retried only on these: after a reset
    connection, a timeout or a 500, the server may have created it, and a retry would create a
    second one.
    """
    seen = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _NEVER):
            return False
        if isinstance(current, ConnectionRefusedError):
            return True
        classes = _classes(current)
        if ("urllib3.exceptions", "NewConnectionError") in classes or (
            "botocore.exceptions",
            "EndpointConnectionError",
        ) in classes:
            return is_transient(current)
        if ("kfp_server_api.exceptions", "ApiException") in classes:
            return getattr(current, "status", None) in (429, 503)
        if ("urllib3.exceptions", "MaxRetryError") in classes:
            current = getattr(current, "reason", None)
            continue
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return False


def backoff_delays(
    attempts: int | None = None, base_seconds: float | None = None, cap_seconds: float | None = None
) -> list[float]:
    """The waits between `attempts` attempts: base, 2 base, 4 base... each at most the cap."""
    attempts = ATTEMPTS if attempts is None else attempts
    base = BASE_SECONDS if base_seconds is None else base_seconds
    cap = CAP_SECONDS if cap_seconds is None else cap_seconds
    return [min(cap, base * 2**k) for k in range(max(attempts - 1, 0))]


def one_line(error: BaseException) -> str:
    """The error's type and message on one line, any URL password hidden."""
    # Hidden before it is cut short: a URL cut before its '@' would no longer look like one
    # with a password.
    message = redact_text(" ".join(str(error).split()))
    if len(message) > MESSAGE_CHARS:
        message = message[: MESSAGE_CHARS - 1] + "…"
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def retry_transient(
    what: str,
    function: Callable,
    *args,
    attempts: int | None = None,
    base_seconds: float | None = None,
    cap_seconds: float | None = None,
    sleep: Callable[[float], None] | None = None,
    transient: Callable[[BaseException], bool] | None = None,
    **kwargs,
):
    """`function(*args, **kwargs)`, called again after a transient error.

    Waits `min(cap, base * 2**k)` before retry k+1: a fixed schedule, no jitter. The callers
    here are a handful (a pipeline's steps, one CLI), not a fleet that could stampede a server
    back to its knees, and botocore already jitters its own retries underneath; a fixed schedule
    keeps the documented wait true and the tests exact. Each retry prints one line to stderr.

    Args:
        what: what the call does, for the retry line ("read s3://bucket/lake").
        attempts, base_seconds, cap_seconds: the schedule; by default the module's ATTEMPTS,
            BASE_SECONDS and CAP_SECONDS (read at call time).
        sleep: how to wait (tests pass a recorder); by default time.sleep.
        transient: which errors to retry; by default `is_transient`.

    Raises:
        The last error when every attempt failed transiently; a non-transient error at once.
    """
    delays = backoff_delays(attempts, base_seconds, cap_seconds)
    sleep = time.sleep if sleep is None else sleep
    transient = is_transient if transient is None else transient
    for k in range(len(delays) + 1):
        try:
            return function(*args, **kwargs)
        except Exception as error:
            if k == len(delays) or not transient(error):
                raise
            delay = delays[k]
            print(
                f"{redact_text(what)}: {one_line(error)}; retry {k + 1} of {len(delays)} "
                f"in {delay:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        sleep(delay)


def retrying(what: str, **options):
    """`retry_transient` as a decorator: @retrying("list the versions")."""

    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            return retry_transient(what, function, *args, **options, **kwargs)

        return wrapper

    return decorate
