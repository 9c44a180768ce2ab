"""A compatibility shim between kfp.local's DockerRunner and podman's Docker API (podman 4.3).

DockerRunner starts each step's container with `auto_remove=True`, then inspects it, streams its
logs and asks for its exit status. A quick step may have removed itself by then: Docker answers
404, which kfp catches (and then takes the step as succeeded), but podman 4.3 answers 500 ("does
not exist in database"), which kfp does not catch, and the run fails although the step
succeeded (here, without the shim, the 4th of 6 runs of a one-step pipeline failed so). So, while the shim is on, a step's
container is started without auto_remove, kept until its exit status has been read (its logs
and status are then always there, and a failed step is seen as failed), and removed by its ID
right after; any container left when the shim ends (a step interrupted) is removed too.

It lives in the tests because only they run pipelines under DockerRunner: `mlpipe run` uses
kfp.local's SubprocessRunner, and a cluster runs pods, not this code.
"""

import contextlib
from unittest import mock

from tests.containers.engine import podman


@contextlib.contextmanager
def keep_containers_until_read():
    """While on: DockerRunner's containers are kept until their exit status is read, then
    removed. Yields the list of containers it started (docker SDK objects), in order."""
    import docker
    from docker.models.containers import Container, ContainerCollection

    started: list[Container] = []
    run, wait = ContainerCollection.run, Container.wait

    def run_kept(self, image, command=None, **kwargs):
        kwargs["auto_remove"] = False
        container = run(self, image, command, **kwargs)
        started.append(container)
        return container

    def wait_then_remove(self, **kwargs):
        try:
            return wait(self, **kwargs)
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                self.remove(force=True)

    try:
        with (
            mock.patch.object(ContainerCollection, "run", run_kept),
            mock.patch.object(Container, "wait", wait_then_remove),
        ):
            yield started
    finally:
        # By ID with the podman CLI: the SDK's client of a step is closed once the step ends.
        for container in started:
            podman("rm", "--force", "--ignore", "--time", "0", container.id, check=False)
