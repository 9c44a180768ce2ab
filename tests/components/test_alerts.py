"""Alerts reach a real webhook on 127.0.0.1, are retried when the receiver is away, never raise,
and never show the webhook's path (a token) anywhere."""

import pytest

from components.common import alerts
from components.common.alerts import AlertOutcome, send_alert, worst_case_seconds
from components.common.errors import PipelineInputError
from pipelines.cli import main
from pipelines.config import load_config
from tests.alert_receiver import free_port, receiver
from tests.conftest import write_config


@pytest.fixture(autouse=True)
def short_backoff(monkeypatch):
    """Waits between attempts of a few milliseconds: the schedule is tested, not the clock."""
    monkeypatch.setattr(alerts, "BACKOFF_SECONDS", 0.01)
    # The receiver is on loopback: a proxy in the environment must not stand in between.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def settings(url: str = "", **overrides) -> dict:
    return {
        "webhook_url": url,
        "webhook_url_env": "TEST_ALERT_WEBHOOK",
        "timeout_seconds": 2.0,
        "retries": 2,
        "events": ["monitor_warn", "training_failed", "new_champion"],
        **overrides,
    }


def test_delivered_body_has_slack_text_and_the_structured_fields(capsys):
    with receiver([200]) as hook:
        outcome = send_alert(
            settings(hook.url),
            "new_champion",
            "v3 promoted (roc_auc 0.91)",
            {"model": "loans", "version": "v3", "roc_auc": 0.91},
            environ={},
        )
    assert outcome.delivered and outcome.attempts == 1 and outcome.status == 200
    assert outcome.error == ""
    (body,) = hook.bodies
    assert body["text"] == "mlpipe new_champion loans: v3 promoted (roc_auc 0.91)"
    assert body["event"] == "new_champion"
    assert body["model"] == "loans"
    assert body["summary"] == "v3 promoted (roc_auc 0.91)"
    assert body["version"] == "v3" and body["roc_auc"] == 0.91
    assert hook.requests[0]["headers"]["Content-Type"] == "application/json"
    # Always also to the log: one line on stderr naming the event and where it went.
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert (
        "alert new_champion: v3 promoted" in err[0] and "delivered to http://127.0.0.1:" in err[0]
    )


def test_fields_cannot_replace_the_text_event_or_summary():
    with receiver([200]) as hook:
        send_alert(
            settings(hook.url),
            "monitor_warn",
            "two features drifted",
            {"text": "x", "event": "y", "summary": "z", "features": ["age", "income"]},
            environ={},
        )
    (body,) = hook.bodies
    assert (body["event"], body["summary"]) == ("monitor_warn", "two features drifted")
    assert body["text"].startswith("mlpipe monitor_warn")
    assert body["features"] == ["age", "income"]


def test_receiver_down_is_undelivered_after_every_retry_and_does_not_raise():
    url = f"http://127.0.0.1:{free_port()}/hook/SECRET-TOKEN"
    outcome = send_alert(settings(url), "training_failed", "train failed", environ={})
    assert not outcome.delivered
    assert outcome.attempts == 3  # the first and two retries
    assert outcome.status is None
    assert "refused" in outcome.error.lower()
    assert "SECRET-TOKEN" not in outcome.line()
    assert "NOT delivered" in outcome.line()


def test_500_then_200_is_delivered_on_the_second_attempt():
    with receiver([500, 200]) as hook:
        outcome = send_alert(settings(hook.url), "monitor_warn", "drift", environ={})
    assert outcome.delivered and outcome.attempts == 2 and outcome.status == 200
    assert len(hook.bodies) == 2 and hook.bodies[0] == hook.bodies[1]


def test_429_is_retried_and_a_lasting_503_gives_up_after_the_retries():
    with receiver([429, 503]) as hook:
        outcome = send_alert(settings(hook.url), "monitor_warn", "drift", environ={})
    assert not outcome.delivered and outcome.attempts == 3 and outcome.status == 503
    assert outcome.error.startswith("HTTP 503")
    assert len(hook.requests) == 3


@pytest.mark.parametrize("status", [400, 403, 404])
def test_other_4xx_is_final_and_not_retried(status):
    with receiver([status]) as hook:
        outcome = send_alert(settings(hook.url), "monitor_warn", "drift", environ={})
    assert not outcome.delivered and outcome.attempts == 1 and outcome.status == status
    assert len(hook.requests) == 1
    assert "refused" in outcome.error  # the receiver's answer, shortened


def test_a_receiver_hanging_past_the_timeout_is_undelivered_after_bounded_attempts():
    with receiver(["hang"]) as hook:
        outcome = send_alert(
            settings(hook.url, timeout_seconds=0.2, retries=1),
            "monitor_warn",
            "drift",
            environ={},
        )
    assert not outcome.delivered
    assert outcome.attempts == 2
    assert outcome.status is None
    assert "no answer within 0.2 s" in outcome.error
    assert len(hook.requests) == 2


def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_attempts_deadline():
    # Each byte comes well within the timeout, so only the attempt's own deadline ends it.
    with receiver(["trickle"]) as hook:
        outcome = send_alert(
            settings(hook.url, timeout_seconds=0.5, retries=0), "monitor_warn", "drift", environ={}
        )
    assert not outcome.delivered and outcome.attempts == 1
    assert "no answer within 0.5 s" in outcome.error


def test_event_not_enabled_is_not_sent_but_still_logged(capsys):
    with receiver([200]) as hook:
        outcome = send_alert(settings(hook.url), "fairness_blocked", "blocked", environ={})
    assert outcome == AlertOutcome(
        "fairness_blocked", False, 0, None, "event not in alerts.events", "", "blocked"
    )
    assert hook.requests == []
    assert "alert fairness_blocked: blocked (not sent: event not in alerts.events)" in (
        capsys.readouterr().err
    )


def test_no_webhook_is_log_only():
    outcome = send_alert(settings(), "monitor_warn", "drift", environ={})
    assert (outcome.delivered, outcome.attempts, outcome.error) == (
        False,
        0,
        "no webhook configured",
    )
    assert outcome.line() == "alert monitor_warn: drift (not sent: no webhook configured)"


def test_url_from_the_environment_wins_and_is_never_shown(capsys, caplog):
    caplog.set_level("INFO", logger="mlpipe.alerts")
    with receiver([200], path="/services/T000/B000/XOXB-SECRET") as env_hook:
        with receiver([200]) as config_hook:
            outcome = send_alert(
                settings(config_hook.url),
                "training_failed",
                "train failed",
                environ={"TEST_ALERT_WEBHOOK": env_hook.url},
            )
    assert outcome.delivered
    assert len(env_hook.requests) == 1 and config_hook.requests == []
    assert env_hook.requests[0]["path"] == "/services/T000/B000/XOXB-SECRET"
    shown = " ".join([outcome.line(), repr(outcome), capsys.readouterr().err, caplog.text])
    assert "XOXB-SECRET" not in shown and "/services" not in shown
    assert outcome.destination == env_hook.url.split("/services")[0]


def test_a_refusing_receiver_never_shows_the_token_even_when_it_echoes_the_url():
    # The receiver's refusal and requests' own messages both name the URL's path.
    url = f"http://127.0.0.1:{free_port()}/hook/XOXB-SECRET?token=XOXB-SECRET"
    outcome = send_alert(
        settings(retries=0), "monitor_warn", "drift", environ={"TEST_ALERT_WEBHOOK": url}
    )
    assert not outcome.delivered and outcome.attempts == 1
    assert "XOXB-SECRET" not in outcome.line()


def test_an_environment_url_that_is_not_http_is_not_sent_and_not_shown():
    outcome = send_alert(
        settings(), "monitor_warn", "drift", environ={"TEST_ALERT_WEBHOOK": "ftp://h/SECRET"}
    )
    assert not outcome.delivered and outcome.attempts == 0
    assert outcome.error == "the URL in $TEST_ALERT_WEBHOOK is not http(s)"
    assert "SECRET" not in outcome.line()


def test_broken_settings_never_raise():
    outcome = send_alert({"retries": "many"}, "monitor_warn", "drift", environ={"X": "y"})
    assert not outcome.delivered
    outcome = send_alert(None, "monitor_warn", "drift", environ={})
    assert outcome.error == "no webhook configured"


def test_worst_case_is_the_timeouts_plus_the_backoff(monkeypatch):
    monkeypatch.setattr(alerts, "BACKOFF_SECONDS", 0.5)
    assert worst_case_seconds({"timeout_seconds": 5, "retries": 3}) == pytest.approx(
        5 * 4 + 0.5 + 1 + 2
    )
    assert worst_case_seconds({"timeout_seconds": 1, "retries": 0}) == 1


def test_a_webhook_url_that_is_not_http_is_refused_at_config_load(tmp_path, capsys):
    config = write_config(
        tmp_path / "run.yaml",
        output_root=str(tmp_path / "out"),
        **{"alerts.webhook_url": "ftp://hooks.example/T1"},
    )
    with pytest.raises(PipelineInputError) as raised:
        load_config(config)
    message = str(raised.value)
    assert "\n" not in message
    assert "webhook_url" in message and "ftp://hooks.example/T1" in message
    # The CLI: one line naming it, exit code 2, before anything runs.
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "webhook_url" in err and "not an http(s) URL" in err
    assert not (tmp_path / "out").exists()
