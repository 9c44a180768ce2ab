"""Where Ray work runs (the tune step's trials, batch predictions): an embedded Ray on 127.0.0.1,
or an existing Ray cluster.

Embedded (the default): a single-node Ray bound to loopback with the configured CPUs, started for
the search and shut down after it.

An existing cluster (a KubeRay RayCluster, or any Ray): the step connects to the head's GCS
address (`host:6379`, from `ray.address` or RAY_ADDRESS) as a Ray driver. Trials run on the
cluster's nodes, their logs stream back into the step's log, and the driver only disconnects at
the end: the cluster is not ours to stop. Before connecting, the address is probed in a child
process with a deadline, because `ray.init` on an address where nothing answers retries for
minutes instead of failing.
"""

import contextlib
import os
import socket
import subprocess
import sys

from components.common.errors import PipelineInputError

LOOPBACK = "127.0.0.1"
ADDRESS_ENV = "RAY_ADDRESS"
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
DEFAULT_CONNECT_TIMEOUT_S = 30

# Reads one key from the GCS: answers only if a Ray head (and its token auth, if on) accepts us.
_PROBE = (
    "import sys\n"
    "from ray._raylet import GcsClient\n"
    "GcsClient(address=sys.argv[1]).internal_kv_keys(b'', namespace=None, timeout=5)\n"
)


def pin_embedded_ray_to_loopback() -> None:
    """Keep an embedded Ray on 127.0.0.1: call it before Ray is first imported (Ray reads the
    variable once). Unset on Linux, Ray advertises the machine's network address and listens on
    every interface. A process that joins a cluster (RAY_ADDRESS set) and the cluster's own nodes
    keep Ray's normal networking, or the nodes could not reach each other."""
    if os.environ.get(ADDRESS_ENV, "") in ("", "local"):
        os.environ.setdefault(LOOPBACK_ENV, "0")


def cluster_address(address: str) -> str:
    """The configured address, else RAY_ADDRESS; empty means an embedded Ray."""
    address = (address or os.environ.get(ADDRESS_ENV, "")).strip()
    return "" if address in ("", "local") else address


def _host_port(address: str) -> tuple[str, int]:
    bare = address.removeprefix("ray://")
    host, _, port = bare.rpartition(":")
    if not host or not port.isdigit():
        raise PipelineInputError(
            f"ray.address: '{address}' is not host:port (for example "
            "mlpipe-tune-head-svc.mlpipe.svc:6379)"
        )
    return host.strip("[]"), int(port)


def probe_cluster(address: str, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
    """Fail within `timeout_s` with one line if no Ray head answers at `address`."""
    host, port = _host_port(address)
    hint = "is the Ray head running, and is the address reachable from here?"
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as error:
        reason = "no answer" if isinstance(error, TimeoutError) else error.strerror or str(error)
        raise PipelineInputError(
            f"ray.address: cannot reach the Ray cluster at {address} ({reason} within "
            f"{timeout_s:g} s); {hint}"
        ) from None
    if address.startswith("ray://"):
        return  # Ray Client: ray.init has its own connect timeout
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE, address],
            timeout=timeout_s,
            capture_output=True,
            text=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PipelineInputError(
            f"ray.address: {address} accepts connections but no Ray GCS answered within "
            f"{timeout_s:g} s; {hint}"
        ) from None
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        raise PipelineInputError(f"ray.address: the Ray cluster at {address} refused us: {last}")


def _check_loopback(ray) -> None:
    addresses = {node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]}
    if addresses != {LOOPBACK}:
        raise RuntimeError(
            f"the embedded Ray came up on {', '.join(sorted(addresses))}, not {LOOPBACK}: "
            "set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Ray is first imported"
        )


@contextlib.contextmanager
def local_ray(num_cpus: int):
    """Start an embedded Ray on 127.0.0.1 for the duration of the block, then shut it down.

    Importing this package already set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (see __init__), which
    keeps Ray on loopback; if Ray was imported before that could happen, the node comes up on
    another address, and this refuses to go on with it.
    """
    # Per-trial JSON/CSV/TensorBoard loggers cost more than a small trial; results are collected here.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    import ray

    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
    )
    try:
        _check_loopback(ray)
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def connected_ray(address: str, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S):
    """Join an existing Ray cluster as a driver for the block, then disconnect (never stop it).

    Trial output streams into this process's log (log_to_driver). The cluster's nodes must be able
    to import this project (run the project's image on them) and read the Tune storage path.
    """
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    probe_cluster(address, timeout_s)
    import ray

    ray.init(address=address, log_to_driver=True, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()


def ray_session(num_cpus: int, address: str = "", timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S):
    """The embedded Ray when no address is configured (nor RAY_ADDRESS), else the cluster's."""
    address = cluster_address(address)
    return connected_ray(address, timeout_s) if address else local_ray(num_cpus)
