"""`make loop`: the whole loop, once, on synthetic loan applications (configs/loop.yaml).

1. data     a lake of 2023's monthly partitions (components.ingest.synthetic);
2. train    `mlpipe run`'s pipeline, full, on it (kfp.local): the champion;
3. serve    the real model server on 127.0.0.1, logging every prediction;
4. traffic  rows drawn from 2024, whose features are shifted and whose label relation has changed,
            sent through the server (so they are logged), then their labels (POST /admin/labels);
5. loop     `mlpipe loop`'s pass: the monitor says retrain and names the shifted features; the
            incremental retraining updates the champion on the labelled predictions; the gate
            compares it with the champion on new rows neither trained on; it is promoted and
            the server reloads, while traffic keeps flowing: no request fails;
6. traffic  more 2024 rows, like the ones the new champion learnt from, and their labels;
7. loop     the monitor says ok.

Each step prints one line. Everything runs under the config's output_root (mlpipe-output/loop),
which the demo empties first; the server is stopped by its process handle at the end, also when
a step fails.
"""

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import requests
from rich.console import Console
from rich.markup import escape

from components.common.errors import PipelineInputError, StepFailed
from pipelines.loop_cli import ADMIN_TOKEN_ENV

console = Console(highlight=False, soft_wrap=True)
errors = Console(stderr=True, highlight=False, soft_wrap=True)

MLPIPE = str(Path(sys.executable).with_name("mlpipe"))
# 2023: the training lake; 2024: the traffic. The shift moves these features' distributions by
# the given population stability index; the changed relation reverses every feature's effect.
MONTHS = 12
ROWS_PER_MONTH = 400
SHIFTS = {"income": 0.5, "credit_score": 0.5, "utilization": 0.5}
RELATION = "changed"
TRAFFIC_ROWS = 1200
AFTER_ROWS = 600
ROWS_PER_REQUEST = 20
READY_TIMEOUT_SECONDS = 60.0
FLUSH_TIMEOUT_SECONDS = 30.0


def _line(step: str, text: str) -> None:
    console.print(f"{step:<10} {escape(text)}")


def _table(rows: int, seed: int, number: int, shifted: bool, columns: list[str]) -> pd.DataFrame:
    from components.ingest.synthetic import make_table

    table = make_table(
        rows,
        seed=seed,
        number=number,
        shifts=SHIFTS if shifted else None,
        relation=RELATION if shifted else "reference",
    )
    return table.to_pandas()[columns]


def write_lake(source: Path, columns: list[str], seed: int = 2023) -> int:
    """2023's monthly partitions, year=2023/month=MM/part-0.parquet; the rows written."""
    for month in range(1, MONTHS + 1):
        frame = _table(ROWS_PER_MONTH, seed, month, shifted=False, columns=columns)
        folder = source / "year=2023" / f"month={month:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / "part-0.parquet")
    return MONTHS * ROWS_PER_MONTH


class Server:
    """`mlpipe serve` of the champion, in its own session, stopped by its handle."""

    def __init__(self, config, token: str):
        self.url = f"http://127.0.0.1:{config.serving.port}"
        self.name = config.model_name
        log = Path(config.output_root) / "server.log"
        self._log = open(log, "w", encoding="utf-8")
        self.process = subprocess.Popen(
            [
                MLPIPE,
                "serve",
                "--model-store",
                str(Path(config.model_store_uri).resolve()),
                "--name",
                config.model_name,
                "--host",
                "127.0.0.1",
                "--port",
                str(config.serving.port),
                "--prediction-log",
                str(Path(config.prediction_log_uri).resolve()),
                "--labels",
                str(Path(config.labels_uri).resolve()),
            ],
            env={**os.environ, ADMIN_TOKEN_ENV: token},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.headers = {"Authorization": f"Bearer {token}"}

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StepFailed(f"serve: the model server exited ({self.process.returncode})")
            try:
                if requests.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise StepFailed(f"serve: not ready within {READY_TIMEOUT_SECONDS:.0f} s")

    def predict(self, rows: list[dict]) -> tuple[str, list]:
        answer = requests.post(
            f"{self.url}/v1/models/{self.name}:predict", json={"instances": rows}, timeout=30
        )
        answer.raise_for_status()
        return answer.headers["X-Request-Id"], answer.json()["predictions"]

    def send_labels(self, pairs: list[dict]) -> dict:
        answer = requests.post(
            f"{self.url}/admin/labels", json={"labels": pairs}, headers=self.headers, timeout=60
        )
        if answer.status_code != 200:
            raise StepFailed(f"labels: HTTP {answer.status_code}: {answer.text[:300]}")
        return answer.json()

    def logged_rows(self) -> int:
        answer = requests.get(f"{self.url}/v2/models/{self.name}/prediction-log", timeout=10)
        return int(answer.json().get("written", 0))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def send_traffic(server: Server, frame: pd.DataFrame, target: str) -> list[dict]:
    """Every row through the server, ROWS_PER_REQUEST at a time; the label pairs to send back."""
    features = frame.drop(columns=[target])
    records = features.astype(object).where(features.notna(), None).to_dict("records")
    pairs = []
    for start in range(0, len(records), ROWS_PER_REQUEST):
        request_id, _ = server.predict(records[start : start + ROWS_PER_REQUEST])
        for row, label in enumerate(frame[target].iloc[start : start + ROWS_PER_REQUEST]):
            pairs.append({"request_id": request_id, "row": row, "label": int(label)})
    return pairs


def wait_logged(server: Server, rows: int) -> None:
    """Until the server's prediction log has written `rows` rows (it writes in batches)."""
    deadline = time.monotonic() + FLUSH_TIMEOUT_SECONDS
    while server.logged_rows() < rows:
        if time.monotonic() > deadline:
            raise StepFailed(f"traffic: the prediction log wrote fewer than {rows} rows")
        time.sleep(0.5)


def labelled_traffic(server: Server, frame: pd.DataFrame, target: str) -> tuple[list, dict]:
    """The rows through the server, logged, then their labels sent back: (pairs, the answer)."""
    logged_before = server.logged_rows()
    pairs = send_traffic(server, frame, target)
    wait_logged(server, logged_before + len(pairs))
    return pairs, server.send_labels(pairs)


class BackgroundTraffic:
    """Single rows sent without pause while the loop retrains and the server reloads."""

    def __init__(self, server: Server, frame: pd.DataFrame, target: str):
        features = frame.drop(columns=[target])
        self.rows = features.astype(object).where(features.notna(), None).to_dict("records")
        self.server, self.sent, self.failed = server, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.server.predict([self.rows[self.sent % len(self.rows)]])
            except requests.RequestException:
                self.failed += 1
            self.sent += 1
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=35)


def _closed_loop(config, columns: list[str], steps_log) -> None:
    """Train, serve, drift, the loop's pass that retrains, more traffic, the pass that says ok."""
    from pipelines.local_run import run_pipeline
    from pipelines.loop_cli import one_pass

    target = config.target
    with contextlib.redirect_stdout(steps_log):
        first = run_pipeline(config, use_cache=False)
    _line(
        "train",
        f"{config.model_name} {first.model_version} (full, {first.seconds:.0f} s): {first.reason}",
    )
    token = secrets.token_urlsafe(32)
    os.environ[ADMIN_TOKEN_ENV] = token  # for the loop's reload call, as a user would export it
    server = Server(config, token)
    try:
        server.wait_ready()
        _line("serve", f"{server.url} serves {config.model_name} {first.champion}")
        traffic = _table(TRAFFIC_ROWS, 2024, 1, shifted=True, columns=columns)
        pairs, labelled = labelled_traffic(server, traffic, target)
        _line(
            "traffic",
            f"{len(pairs)} rows of 2024 (shifted: {', '.join(SHIFTS)}; label relation "
            f"{RELATION}) answered and logged; {labelled['appended']} labels sent back",
        )

        # What `mlpipe loop --once --server URL` passes.
        args = types.SimpleNamespace(once=True, server=server.url)
        background = _table(200, 2024, 9, shifted=True, columns=columns)
        with BackgroundTraffic(server, background, target) as flowing:
            outcome = one_pass(config, args, _line, steps_log)
        _line(
            "traffic",
            f"{flowing.sent} requests during the retraining and the reload: "
            f"{flowing.failed} failed",
        )
        if outcome["decision"] != "retrain" or not outcome["promoted"]:
            raise StepFailed(
                f"loop: expected a retraining that is promoted, got {outcome['decision']} "
                f"(promoted: {outcome['promoted']})"
            )
        if flowing.failed:
            raise StepFailed(f"loop: {flowing.failed} requests failed during the swap")

        after = _table(AFTER_ROWS, 2024, 2, shifted=True, columns=columns)
        pairs, labelled = labelled_traffic(server, after, target)
        _line(
            "traffic",
            f"{len(pairs)} more rows of 2024, like the new champion's, and {labelled['appended']} "
            "labels",
        )
        outcome = one_pass(config, args, _line, steps_log)
        if outcome["decision"] != "ok":
            raise StepFailed(f"loop: expected ok after the update, got {outcome['decision']}")
    finally:
        server.stop()


def run_demo(config_path: str) -> int:
    from pipelines.cli import _load_checked_config

    started = time.monotonic()
    config = _load_checked_config(config_path, check_data=False)
    root = Path(config.output_root)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    columns = list(config.data.columns)
    rows = write_lake(Path(config.data.source), columns)
    _line("data", f"{rows} rows of 2023 in {MONTHS} monthly partitions at {config.data.source}")

    # The pipeline runs' own step lines go to a file: the demo prints one line per step.
    with open(root / "steps.log", "a", encoding="utf-8") as steps_log:
        _closed_loop(config, columns, steps_log)
    _line(
        "done",
        f"the loop closed in {time.monotonic() - started:.0f} s (the pipeline steps' lines: "
        f"{root / 'steps.log'})",
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.loop_demo", description=__doc__)
    parser.add_argument("--config", default="configs/loop.yaml")
    args = parser.parse_args(argv)
    try:
        return run_demo(args.config)
    except (PipelineInputError, StepFailed) as error:
        errors.print(f"[bold red]error[/]: {escape(str(error))}")
        return 2 if isinstance(error, PipelineInputError) else 1
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
