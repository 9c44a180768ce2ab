"""ETL snapshots from real database servers: a PostgreSQL and a MariaDB that this module starts on
127.0.0.1 (on free ports, in temporary folders, as an unprivileged user when run as root), reached
through the drivers the project installs (psycopg, PyMySQL) with plain postgresql:// and mysql://
URLs as a user writes them.

`make databases` installs the servers (Debian's postgresql and mariadb-server). Without them the
tests skip, except under CI=true, where a server that cannot be found or started fails the run.
Each server is this process's child, stopped by its handle at the end (also when a test fails)
and its folder removed.
"""

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import psutil
import pytest

from components.common.errors import PipelineInputError
from components.common.settings.etl import SqlSource
from components.ingest.snapshot import MANIFEST_FILE, _read_sql, run_etl

pytestmark = pytest.mark.databases

PASSWORD = "s3cret-Pw"  # the ETL user's; never in a message, manifest or snapshot id
WRONG_PASSWORD = "not-the-Pw"
STARTUP_SECONDS = 60

ROWS = [
    # id, score (a NULL), name (a NULL), joined
    (1, 2.5, "ann", date(2020, 1, 5)),
    (2, None, "bob", date(2021, 3, 4)),
    (3, -7.25, None, date(2019, 12, 31)),
    (4, 1e6, "dan", date(2022, 7, 15)),
]


def _unavailable(reason: str):
    """Skip, except under CI=true, where `make` installs the servers and a missing one fails."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _runner() -> pwd.struct_passwd | None:
    """The unprivileged account a server runs as when the tests run as root (PostgreSQL refuses
    root); None when the tests already run unprivileged."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        _unavailable("running as root and there is no 'nobody' user to run the servers as")


def _workdir(prefix: str, runner) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    if runner is not None:
        os.chown(folder, runner.pw_uid, runner.pw_gid)
    return folder


def _as(runner) -> dict:
    """Popen arguments that run a command as `runner`."""
    if runner is None:
        return {}
    return {"user": runner.pw_uid, "group": runner.pw_gid, "extra_groups": []}


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen, stop_signal: int) -> None:
    """Stop the server by its handle: a clean shutdown, then SIGKILL if it does not exit."""
    if process.poll() is not None:
        return
    process.send_signal(stop_signal)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _wait_until_ready(process: subprocess.Popen, connect, log: Path, name: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}: {_tail(log)}")
        try:
            connect().close()
            return
        except Exception as error:  # not listening yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready in {STARTUP_SECONDS} s ({error})") from None
            time.sleep(0.2)


@dataclass
class Server:
    name: str
    port: int
    pid: int  # the server process, this test process's child
    schemes: tuple[str, ...]  # the URL schemes that reach it: the plain one first
    double: str  # the SQL type of a 64-bit float there

    def url(self, scheme: str | None = None, port: int | None = None):
        """The server's URL as a run config names it: the user, never the password (that comes
        from the environment variable the source's password_env names)."""
        scheme = scheme or self.schemes[0]
        return f"{scheme}://etl@127.0.0.1:{port or self.port}/etl"


# The variable that carries the password, as a run config's `sql.password_env` names it.
PASSWORD_ENV = "MLPIPE_TEST_DB_PASSWORD"


@pytest.fixture(autouse=True)
def database_password(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


def _sql(url: str, **source) -> dict:
    """An ETL spec reading from `url` with the password from the environment."""
    return {"source": {"sql": {"url": url, "password_env": PASSWORD_ENV, **source}}}


def _start(name: str, start) -> Server:
    try:
        return start()
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        _unavailable(f"{name} could not be started: {' '.join(str(error).split())}")


@pytest.fixture(scope="session")
def postgresql_server():
    initdbs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdbs:
        _unavailable("PostgreSQL is not installed (make databases)")
    bin_dir = Path(initdbs[-1]).parent
    runner = _runner()
    folder = _workdir("mlpipe-pg-", runner)
    data, log, port = folder / "data", folder / "postgres.log", _free_port()
    process = None
    try:

        def start() -> Server:
            nonlocal process
            subprocess.run(
                [bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth-local=trust",
                 "--auth-host=scram-sha-256", "--no-sync"],
                cwd=folder, check=True, capture_output=True, timeout=120, **_as(runner),
            )  # fmt: skip
            with open(log, "wb") as output:
                process = subprocess.Popen(
                    [bin_dir / "postgres", "-D", data, "-k", folder, "-p", str(port),
                     "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                    cwd=folder, stdout=output, stderr=subprocess.STDOUT, **_as(runner),
                )  # fmt: skip
            import psycopg

            def admin():  # the superuser, through the Unix socket (trusted)
                return psycopg.connect(
                    host=str(folder), port=port, user="postgres", dbname="postgres", autocommit=True
                )

            _wait_until_ready(process, admin, log, "postgres")
            with admin() as connection:
                connection.execute(f"CREATE ROLE etl LOGIN PASSWORD '{PASSWORD}'")
                connection.execute("CREATE DATABASE etl OWNER etl")
            schemes = ("postgresql", "postgresql+psycopg")
            return Server("postgresql", port, process.pid, schemes, double="DOUBLE PRECISION")

        yield _start("PostgreSQL", start)
    finally:
        if process is not None:
            _stop(process, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def mariadb_server():
    mariadbd = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/bin")
    install_db = shutil.which("mariadb-install-db") or shutil.which(
        "mariadb-install-db", path="/usr/bin:/usr/sbin"
    )
    if not (mariadbd and install_db):
        _unavailable("MariaDB is not installed (make databases)")
    runner = _runner()
    user = runner.pw_name if runner else pwd.getpwuid(os.geteuid()).pw_name
    folder = _workdir("mlpipe-mariadb-", runner)
    data, log, sock, port = folder / "data", folder / "mariadb.log", folder / "sock", _free_port()
    process = None
    try:

        def start() -> Server:
            nonlocal process
            subprocess.run(
                [install_db, "--no-defaults", f"--datadir={data}", f"--user={user}",
                 "--auth-root-authentication-method=normal", "--skip-test-db",
                 "--skip-name-resolve"],
                cwd=folder, check=True, capture_output=True, timeout=180,
            )  # fmt: skip
            process = subprocess.Popen(
                [mariadbd, "--no-defaults", f"--datadir={data}", f"--socket={sock}",
                 f"--port={port}", "--bind-address=127.0.0.1", "--skip-networking=0",
                 "--skip-name-resolve", f"--user={user}", f"--pid-file={folder / 'pid'}",
                 f"--log-error={log}", "--innodb-buffer-pool-size=32M"],
                cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            import pymysql

            def admin():  # root without a password, through the socket
                return pymysql.connect(unix_socket=str(sock), user="root", autocommit=True)

            _wait_until_ready(process, admin, log, "mariadbd")
            with admin() as connection, connection.cursor() as cursor:
                cursor.execute("CREATE DATABASE etl")
                cursor.execute(f"CREATE USER 'etl'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'")
                cursor.execute("GRANT ALL ON etl.* TO 'etl'@'127.0.0.1'")
            schemes = ("mysql", "mariadb", "mysql+pymysql")
            return Server("mariadb", port, process.pid, schemes, double="DOUBLE")

        yield _start("MariaDB", start)
    finally:
        if process is not None:
            _stop(process, signal.SIGTERM)  # SIGTERM: mariadbd's clean shutdown
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session", params=["postgresql", "mariadb"])
def server(request) -> Server:
    """Each server, with the table `people` (ROWS) created by the ETL user."""
    server = request.getfixturevalue(f"{request.param}_server")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    # The explicit driver, with the password: this is the test's own connection, not a config.
    engine = create_engine(make_url(server.url(server.schemes[-1])).set(password=PASSWORD))
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS people"))
            connection.execute(
                text(
                    f"CREATE TABLE people (id INTEGER NOT NULL, score {server.double}, "
                    "name TEXT, joined DATE)"
                )
            )
            connection.execute(
                text("INSERT INTO people VALUES (:id, :score, :name, :joined)"),
                [dict(zip(("id", "score", "name", "joined"), row, strict=True)) for row in ROWS],
            )
    finally:
        engine.dispose()
    return server


@pytest.fixture
def root(tmp_path):
    return tmp_path / "snapshots"


def _left(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def _manifest(result) -> dict:
    return json.loads((result.path / MANIFEST_FILE).read_text())


def test_the_server_is_a_child_listening_on_127_0_0_1_only_and_unprivileged(server):
    process = psutil.Process(server.pid)
    assert process.ppid() == os.getpid()
    listening = {
        (c.laddr.ip, c.laddr.port)
        for c in process.connections(kind="inet")  # psutil 5.9: not net_connections
        if c.status == psutil.CONN_LISTEN
    }
    assert listening == {("127.0.0.1", server.port)}
    if os.geteuid() == 0:
        assert process.uids().effective != 0


def test_a_table_becomes_a_snapshot_with_its_values_and_types(server, root):
    url = server.url()  # postgresql:// or mysql://, no driver named: the installed one is used
    result = run_etl(_sql(url, table="people"), root)
    assert result.created and result.rows == len(ROWS)
    frame = pd.read_parquet(result.data_path).sort_values("id", ignore_index=True)
    assert frame["id"].tolist() == [1, 2, 3, 4]
    assert frame["score"].tolist()[0] == 2.5 and pd.isna(frame["score"][1])
    assert frame["score"].tolist()[2:] == [-7.25, 1e6]
    assert frame["name"].tolist() == ["ann", "bob", None, "dan"]
    assert frame["joined"].tolist() == [row[3] for row in ROWS]
    assert {c["name"]: c["type"] for c in result.schema} == {
        "id": "int64",
        "score": "double",
        "name": "string",
        "joined": "date32[day]",
    }
    manifest = _manifest(result)
    shown = f"{server.schemes[0]}://etl@127.0.0.1:{server.port}/etl"
    # The manifest records where the data came from, never the password nor its variable.
    assert manifest["source"] == {"sql": {"url": shown, "table": "people"}}
    assert PASSWORD not in (result.path / MANIFEST_FILE).read_text()


def test_a_query_with_each_url_form(server, root):
    query = "SELECT name, score FROM people WHERE score > 0 ORDER BY id"
    for scheme in server.schemes:
        source = SqlSource(url=server.url(scheme), query=query, password_env=PASSWORD_ENV)
        frame, shown = _read_sql(source)
        assert frame.to_dict("list") == {"name": ["ann", "dan"], "score": [2.5, 1e6]}, scheme
        assert shown == f"{scheme}://etl@127.0.0.1:{server.port}/etl"
    result = run_etl(_sql(server.url(), query=query), root)
    assert pd.read_parquet(result.data_path)["name"].tolist() == ["ann", "dan"]
    assert _manifest(result)["source"]["sql"]["query"] == query


def test_a_wrong_password_is_one_line_naming_the_database_without_either_password(
    server, root, monkeypatch
):
    monkeypatch.setenv(PASSWORD_ENV, WRONG_PASSWORD)
    with pytest.raises(PipelineInputError) as caught:
        run_etl(_sql(server.url(), table="people"), root)
    message = str(caught.value)
    shown = f"{server.schemes[0]}://etl@127.0.0.1:{server.port}/etl"
    assert message.startswith(f"database '{shown}' cannot be reached ("), message
    expected = {"postgresql": "password authentication failed", "mariadb": "Access denied"}
    assert expected[server.name] in message, message
    assert "\n" not in message
    assert WRONG_PASSWORD not in message and PASSWORD not in message
    assert _left(root) == []


def test_a_missing_table_names_it(server, root):
    with pytest.raises(PipelineInputError, match="table 'nobody' does not exist"):
        run_etl(_sql(server.url(), table="nobody"), root)


@pytest.mark.parametrize("scheme", ["postgresql", "mysql", "mariadb"])
def test_a_port_where_nothing_listens_fails_quickly_in_one_line(scheme, root):
    port = _free_port()  # bound and released: nothing listens there now
    url = f"{scheme}://etl@127.0.0.1:{port}/etl"
    started = time.monotonic()
    with pytest.raises(PipelineInputError) as caught:
        run_etl(_sql(url, table="people"), root)
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert message.startswith(f"database '{scheme}://etl@127.0.0.1:{port}/etl' cannot be")
    assert "refused" in message.lower() and "\n" not in message and PASSWORD not in message
    assert _left(root) == []
