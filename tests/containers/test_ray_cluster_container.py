"""The RayCluster in manifests/ can form: in the built project image, a Ray head and a worker
started with the commands and environment that KubeRay gives the two pods, in one container
with no network, so that loopback is the only address (issue #19, part 3). With
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 in the image, the worker would be refused ("Multi-node Ray
clusters are not supported")."""

import json
import secrets
import shlex

import pytest
import yaml

from tests.containers.engine import ROOT, container, podman, podman_run

pytestmark = [pytest.mark.container, pytest.mark.ray]

RAY_CLUSTER = ROOT / "manifests" / "base" / "raycluster.yaml"
RAY_PORT = 6379
# The fixed ports KubeRay gives every Ray container (metrics and the dashboard agent). Each pod
# has its own network namespace; here both nodes share one, so the worker takes others.
KUBERAY_PORTS = {"metrics-export-port": 8080, "dashboard-agent-listen-port": 52365}
WORKER_PORTS = {"metrics-export-port": 8081, "dashboard-agent-listen-port": 52366}
CHECK = """
import json, time, ray
ray.init()  # RAY_ADDRESS, as KubeRay sets it in the head's container
deadline = time.monotonic() + 60
while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
    time.sleep(0.5)
alive = [n for n in ray.nodes() if n["Alive"]]
# The head schedules nothing (num-cpus 0): a task that needs a CPU runs on the worker.
where = ray.get(ray.remote(num_cpus=1)(lambda: ray.get_runtime_context().get_node_id()).remote())
print(json.dumps({"alive": [[n["NodeID"], n["NodeManagerAddress"], n["Resources"].get("CPU", 0)]
                            for n in alive], "task_ran_on": where}))
"""


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


def kuberay_start(group: dict, head: bool, ports: dict) -> tuple[dict, list[str]]:
    """The environment and `ray start` command that KubeRay (1.5) generates for a group's pod:
    its rayStartParams, num-cpus and memory from the container's limits unless given, the
    metrics and dashboard agent ports, token authentication. `--block` (the pod's main
    process) is left out: both nodes start in the background of one container here."""
    (spec,) = group["template"]["spec"]["containers"]
    limits = spec["resources"]["limits"]
    params = {
        "num-cpus": str(limits["cpu"]),
        "memory": str(_bytes(limits["memory"])),
        **{name: str(port) for name, port in ports.items()},
        **group["rayStartParams"],
    }
    env = {item["name"]: item.get("value", "test-secret") for item in spec["env"]}
    env.update(RAY_PORT=str(RAY_PORT), RAY_USAGE_STATS_KUBERAY_IN_USE="1")
    env.update(RAY_CLUSTER_NAME="mlpipe-tune", RAY_AUTH_MODE="token")
    if head:
        env["RAY_ADDRESS"] = f"127.0.0.1:{RAY_PORT}"
        command = ["ray", "start", "--head", f"--port={RAY_PORT}", "--dashboard-host=0.0.0.0"]
    else:
        # FQ_RAY_IP: the head Service's DNS name in a cluster; here the head's only address.
        env.update(FQ_RAY_IP="127.0.0.1", RAY_IP="127.0.0.1")
        command = ["ray", "start", f"--address=127.0.0.1:{RAY_PORT}"]
    command += [f"--{name}={value}" for name, value in params.items()]
    return env, command


def test_a_head_and_a_worker_form_one_cluster_on_loopback(component_image):
    cluster = yaml.safe_load(RAY_CLUSTER.read_text())["spec"]
    (workers,) = cluster["workerGroupSpecs"]
    token = secrets.token_hex(16)  # KubeRay's generated Secret, RAY_AUTH_TOKEN in every pod
    head_env, head = kuberay_start(cluster["headGroupSpec"], True, KUBERAY_PORTS)
    worker_env, worker = kuberay_start(workers, False, WORKER_PORTS)
    for env in (head_env, worker_env):
        assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in env
    script = " && ".join(
        [
            "set -e",
            shlex.join(["env", *[f"{k}={v}" for k, v in head_env.items()], *head]),
            shlex.join(["env", *[f"{k}={v}" for k, v in worker_env.items()], *worker]),
            shlex.join(["env", *[f"{k}={v}" for k, v in head_env.items()], "python", "-c", CHECK]),
        ]
    )
    run_args = ["--network=none", "--env=RAY_AUTH_TOKEN", "--entrypoint=bash", component_image]
    with container(*run_args, "-c", script, env={"RAY_AUTH_TOKEN": token}) as container_id:
        code = podman("wait", container_id, timeout=300).strip()
        logs = podman_run("logs", container_id)
        assert code == "0", logs.stdout + logs.stderr
    answer = json.loads(logs.stdout.strip().splitlines()[-1])
    alive = answer["alive"]
    assert len(alive) == 2, alive
    assert {address for _, address, _ in alive} == {"127.0.0.1"}
    worker_ids = [node for node, _, cpus in alive if cpus == 1]
    assert answer["task_ran_on"] in worker_ids and len(worker_ids) == 1, alive
