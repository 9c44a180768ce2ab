"""`mlpipe loop`'s own parts: the --every duration, one loop per model (a second one refuses, in
another process), and the reload call to the model server (against a stand-in on 127.0.0.1)."""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from components.common.errors import PipelineInputError
from pipelines.loop_cli import loop_lock, parse_every, reload_server

MLPIPE = str(Path(sys.executable).with_name("mlpipe"))


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("10m", 600), ("1h", 3600), ("2", 2), ("0.5m", 30)]
)
def test_every_takes_seconds_minutes_hours(text, seconds):
    assert parse_every(text) == seconds


@pytest.mark.parametrize("text", ["", "0m", "-5m", "10 minutes", "m"])
def test_a_bad_every_is_one_line_naming_the_flag(text):
    with pytest.raises(PipelineInputError, match=f"--every '{text}'"):
        parse_every(text)


def test_a_second_loop_on_the_same_model_refuses_with_the_first_ones_pid(tmp_path):
    with loop_lock(str(tmp_path), "loans"):
        # Another process, as a second `mlpipe loop` would be: flock locks are per open file.
        code = (
            "from pipelines.loop_cli import loop_lock\n"
            "from components.common.errors import PipelineInputError\n"
            "try:\n"
            f"    with loop_lock({str(tmp_path)!r}, 'loans'):\n"
            "        print('got it')\n"
            "except PipelineInputError as error:\n"
            "    print(error)\n"
        )
        second = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert second.stdout.strip() == (
            f"mlpipe loop: another loop is running for model 'loans' (pid {os.getpid()}, lock "
            f"{tmp_path / '.loop-loans.lock'}); stop it first"
        )
        # Another model's loop is free to run.
        with loop_lock(str(tmp_path), "churn"):
            pass
    # Released when the first ends.
    with loop_lock(str(tmp_path), "loans"):
        pass


def test_the_cli_refuses_a_second_loop_with_exit_2(tmp_path):
    (tmp_path / "lake").mkdir()
    pd.DataFrame({"x": [1.0, 2.0], "y": [0, 1]}).to_parquet(tmp_path / "lake" / "part.parquet")
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model_name: loans\ndata: {{source: {tmp_path / 'lake'}}}\ntarget: y\n"
        f"output_root: {tmp_path / 'out'}\n"
    )
    with loop_lock(str(tmp_path / "out"), "loans"):
        result = subprocess.run(
            [MLPIPE, "loop", "--config", str(config), "--once"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
    assert result.returncode == 2
    assert "another loop is running for model 'loans'" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


class _Reload(BaseHTTPRequestHandler):
    answers: list = []
    seen: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.seen.append((self.path, self.headers.get("Authorization")))
        status, body = self.answers.pop(0)
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def stand_in():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Reload)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Reload.answers, _Reload.seen = [], []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_reload_posts_the_token_and_says_what_the_server_serves(stand_in):
    token = "t" * 32
    _Reload.answers = [(200, {"version": "v3", "changed": True})]
    line = reload_server(stand_in, {"MLPIPE_ADMIN_TOKEN": token})
    assert line == f"server at {stand_in} serves v3"
    assert _Reload.seen == [("/admin/reload", f"Bearer {token}")]


def test_a_refused_or_unreachable_reload_and_a_missing_token_are_one_line(stand_in):
    _Reload.answers = [(409, {"error": "v3 failed its checksum", "changed": False})]
    with pytest.raises(PipelineInputError, match="reload refused, HTTP 409: v3 failed"):
        reload_server(stand_in, {"MLPIPE_ADMIN_TOKEN": "t" * 32})
    with pytest.raises(PipelineInputError, match="set MLPIPE_ADMIN_TOKEN"):
        reload_server(stand_in, {})
    with pytest.raises(PipelineInputError, match="cannot reach the model server"):
        reload_server("http://127.0.0.1:9", {"MLPIPE_ADMIN_TOKEN": "t" * 32})


def test_sigterm_ends_a_waiting_loop_within_seconds(tmp_path):
    # No champion yet: each pass is one line on stderr and the loop waits for the next; SIGTERM
    # ends the wait at once, and the lock is released with the process.
    import signal
    import time

    (tmp_path / "lake").mkdir()
    pd.DataFrame({"x": [1.0, 2.0], "y": [0, 1]}).to_parquet(tmp_path / "lake" / "part.parquet")
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model_name: loans\ndata: {{source: {tmp_path / 'lake'}}}\ntarget: y\n"
        f"output_root: {tmp_path / 'out'}\n"
    )
    loop = subprocess.Popen(
        [MLPIPE, "loop", "--config", str(config), "--every", "1h"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        for line in loop.stdout:  # the first pass ends with the wait's line
            if "next pass in 1h" in line or time.monotonic() > deadline:
                break
        started = time.monotonic()
        loop.send_signal(signal.SIGTERM)
        code = loop.wait(timeout=30)
        assert time.monotonic() - started < 10
        stderr = loop.stderr.read()
        assert code == 128 + signal.SIGTERM
        assert "model 'loans' has no champion" in stderr and "loop stopped (SIGTERM)" in stderr
        assert "Traceback" not in stderr
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait()
    with loop_lock(str(tmp_path / "out"), "loans"):
        pass
