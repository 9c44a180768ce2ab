"""Alerts: one JSON POST to a webhook (Slack-compatible), with retries and a cap, and always a log line.

`send_alert(settings, event, summary, fields)` posts

    {"text": "<one line for Slack>", "event": ..., "model": ..., "summary": ..., **fields}

to the webhook named by the `alerts:` section (AlertsConfig): the URL in the environment variable
`webhook_url_env` when it is set (a Slack URL holds a token, so on a cluster it comes from a
Secret), else `webhook_url`, else nowhere (the alert is only logged). A refused or reset
connection, a timeout, an HTTP 429 or 5xx is retried with exponential backoff; any other answer
is final. The whole call takes at most `timeout_seconds * (retries + 1)` plus the backoff waits
(`worst_case_seconds`): each attempt runs in a daemon thread that is abandoned at its deadline, so
a receiver that trickles bytes cannot stretch an attempt past it either.

It never raises: a receiver that is down, slow or refusing is an undelivered alert, reported in
the outcome and the log line, and never changes the outcome of the step or run that sent it.
Only the webhook's scheme and host are ever shown (a log, an outcome, a report): its path and
query may hold a token.
"""

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from components.common.secrets import redact_text, redacted
from components.common.step import SUMMARY_MARK

logger = logging.getLogger("mlpipe.alerts")

# The wait before retry k+1 is BACKOFF_SECONDS * 2**k, at most BACKOFF_CAP_SECONDS: a receiver
# that restarts (a few seconds) is waited for; tests shorten it.
BACKOFF_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 8.0
# How much of a refusing receiver's answer the outcome keeps (Slack answers "invalid_token").
BODY_CHARS = 120
# The keys of the JSON body that `fields` cannot replace.
RESERVED_KEYS = ("text", "event", "summary")
# Used when `settings` leaves a key out (the AlertsConfig defaults).
DEFAULTS = {
    "webhook_url": "",
    "webhook_url_env": "MLPIPE_ALERT_WEBHOOK_URL",
    "timeout_seconds": 5.0,
    "retries": 3,
    "events": None,  # None: every event
}


@dataclass(frozen=True)
class AlertOutcome:
    """What became of one alert.

    Attributes:
        event: the alert's event (one of ALERT_EVENTS).
        delivered: whether the webhook answered 2xx.
        attempts: the POSTs made (0: not sent, the event not enabled or no webhook configured).
        status: the last HTTP status, None when no answer came.
        error: why it was not delivered ("" when delivered).
        destination: the webhook's scheme and host only ("" when none).
        summary: the alert's one-line summary.
    """

    event: str
    delivered: bool
    attempts: int
    status: int | None
    error: str
    destination: str = ""
    summary: str = ""

    def line(self) -> str:
        """One line for logs and reports: the event, the summary and what became of it."""
        head = f"alert {self.event}: {self.summary}" if self.summary else f"alert {self.event}"
        if self.delivered:
            tries = "attempt" if self.attempts == 1 else "attempts"
            return f"{head} (delivered to {self.destination}, {self.attempts} {tries})"
        if self.attempts == 0:
            return f"{head} (not sent: {self.error})"
        answer = f", last HTTP {self.status}" if self.status is not None else ""
        return (
            f"{head} (NOT delivered to {self.destination} after {self.attempts} "
            f"attempt{'s' if self.attempts != 1 else ''}{answer}: {self.error})"
        )


def backoff_waits(retries: int) -> list[float]:
    """The waits before each retry: BACKOFF_SECONDS, twice that... at most BACKOFF_CAP_SECONDS."""
    return [min(BACKOFF_CAP_SECONDS, BACKOFF_SECONDS * 2**k) for k in range(max(retries, 0))]


def worst_case_seconds(settings: Mapping) -> float:
    """The longest `send_alert` can take with these settings: every attempt's timeout plus the
    backoff waits."""
    options = {**DEFAULTS, **dict(settings or {})}
    retries = int(options["retries"])
    return float(options["timeout_seconds"]) * (retries + 1) + sum(backoff_waits(retries))


def destination(url: str) -> str:
    """The part of a webhook URL that may be shown: scheme://host[:port], never path or query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "an unparsable URL"
    return f"{parts.scheme}://{host}{port}"


def slack_text(event: str, model: str, summary: str) -> str:
    """The alert as one line of Slack text."""
    about = f" {model}" if model else ""
    return f"mlpipe {event}{about}: {summary}"


def _webhook(options: Mapping, environ: Mapping[str, str]) -> tuple[str, str]:
    """(the URL, where it came from for messages) or ("", "")."""
    name = options.get("webhook_url_env") or ""
    if name and environ.get(name):
        return environ[name].strip(), f"${name}"
    url = options.get("webhook_url") or ""
    return url.strip(), "alerts.webhook_url" if url else ""


def _hide(text: str, url: str) -> str:
    """`text` (an error, an answer) without the webhook's path or query, on one line."""
    parts = urlsplit(url)
    secret_parts = [url, parts.path + (f"?{parts.query}" if parts.query else ""), parts.query]
    for part in sorted(secret_parts, key=len, reverse=True):
        if len(part) > 1:  # "/" alone hides nothing and would mangle the text
            text = text.replace(part, "/***")
    return redact_text(" ".join(text.split()))


def _describe(error: BaseException, url: str, timeout: float) -> str:
    import requests

    if isinstance(error, requests.Timeout):
        return f"no answer within {timeout:g} s"
    reason = error
    # requests wraps urllib3's MaxRetryError wrapping the socket error: the innermost says it.
    while getattr(reason, "reason", None) is not None and isinstance(reason.reason, BaseException):
        reason = reason.reason
    while reason.__cause__ is not None or (
        reason.__context__ is not None and not reason.__suppress_context__
    ):
        reason = reason.__cause__ or reason.__context__
    text = str(reason) or type(reason).__name__
    if reason is not error:
        text = f"{type(error).__name__}: {text}"
    return _hide(text, url)


def _retryable_error(error: BaseException) -> bool:
    import requests

    # A TLS certificate that does not verify or an invalid URL will not change on a retry.
    if isinstance(error, requests.exceptions.SSLError | requests.exceptions.InvalidURL):
        return False
    return isinstance(error, requests.ConnectionError | requests.Timeout)


def _post_within(url: str, body: bytes, timeout: float, deadline: float):
    """POST `body`; returns (status, answer text) or raises, giving up at `deadline`.

    requests' timeout bounds each socket wait, not the whole call; the thread bounds the whole.
    """
    import requests

    result: dict = {}

    def post() -> None:
        try:
            response = requests.post(
                url,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=timeout,
                allow_redirects=False,  # a redirect could carry the token to another host
            )
            result["answer"] = (response.status_code, response.text[: BODY_CHARS * 4])
        except BaseException as error:  # handed to the caller's thread
            result["error"] = error

    worker = threading.Thread(target=post, name="mlpipe-alert", daemon=True)
    worker.start()
    worker.join(max(deadline - time.monotonic(), 0.0))
    if worker.is_alive():
        raise requests.Timeout("the attempt ran past its deadline")
    if "error" in result:
        raise result["error"]
    return result["answer"]


def _deliver(url: str, body: bytes, options: Mapping) -> tuple[int, int | None, str]:
    """(attempts, last status, error or "") of delivering `body` to `url`."""
    timeout = float(options["timeout_seconds"])
    waits = backoff_waits(int(options["retries"]))
    attempts, status, error = 0, None, ""
    for k in range(len(waits) + 1):
        attempts += 1
        retry = False
        try:
            status, answer = _post_within(url, body, timeout, time.monotonic() + timeout)
        except Exception as failure:
            status, error = None, _describe(failure, url, timeout)
            retry = _retryable_error(failure)
        else:
            if 200 <= status < 300:
                return attempts, status, ""
            shown = _hide(answer, url)[:BODY_CHARS]
            error = f"HTTP {status}" + (f" {shown!r}" if shown else "")
            retry = status == 429 or status >= 500
        if not retry or k == len(waits):
            break
        time.sleep(waits[k])
    return attempts, status, error


def send_alert(
    settings: Mapping | None,
    event: str,
    summary: str,
    fields: dict | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> AlertOutcome:
    """Send one alert to the configured webhook and the log; never raises.

    Args:
        settings: the `alerts:` section as a dict (AlertsConfig); keys left out take defaults.
        event: one of ALERT_EVENTS; an event not in `settings["events"]` is logged as not sent.
        summary: one line saying what happened ("champion v3 promoted: roc_auc 0.91").
        fields: structured details added to the JSON body (`model`, `run_id`, `task`...);
            values that are not JSON are sent as text, URL passwords hidden.
        environ: where the webhook_url_env variable is looked up; by default os.environ.

    Returns:
        The AlertOutcome; its `line()` is also printed to stderr and logged on `mlpipe.alerts`.
    """
    summary = " ".join(str(summary).split())
    try:
        outcome = _send(
            settings, event, summary, fields, os.environ if environ is None else environ
        )
    except Exception as error:  # a bug here must not fail the step that alerts
        outcome = AlertOutcome(
            event, False, 0, None, f"alert failed: {type(error).__name__}", "", summary
        )
    line = outcome.line()
    print(f"{SUMMARY_MARK}{line}", file=sys.stderr, flush=True)
    logger.info(line)
    return outcome


def _send(
    settings: Mapping | None, event: str, summary: str, fields: dict | None, environ: Mapping
) -> AlertOutcome:
    options = {**DEFAULTS, **dict(settings or {})}
    events = options["events"]
    if events is not None and event not in events:
        return AlertOutcome(event, False, 0, None, "event not in alerts.events", "", summary)
    url, source = _webhook(options, environ)
    if not url:
        return AlertOutcome(event, False, 0, None, "no webhook configured", "", summary)
    shown = destination(url)
    if not url.startswith(("http://", "https://")):
        return AlertOutcome(
            event, False, 0, None, f"the URL in {source} is not http(s)", "", summary
        )
    fields = redacted(dict(fields or {}))
    model = str(fields.get("model", "") or "")
    body = {"text": slack_text(event, model, summary), "event": event, "model": model}
    body["summary"] = summary
    body.update({key: value for key, value in fields.items() if key not in RESERVED_KEYS})
    data = json.dumps(body, default=str).encode("utf-8")
    attempts, status, error = _deliver(url, data, options)
    return AlertOutcome(event, not error, attempts, status, error, shown, summary)
