"""The Ray engine: a pool of actors, each a replica of a local backend (its own model, its own GPUs), fed shards of
``batch_size`` requests; results stream back to the gateway as each shard finishes, so each is cached at once.

Plain actors rather than Ray Data: the gateway needs every finished shard back even when another one fails (it
caches them, so the re-run pays only the rest), a clean stop when it drains (budget reached), and the original error
instead of a wrapped one. Shards are handed out on demand (two in flight per actor), so a slow replica gets fewer
of them. Only cache misses ever reach the pool (the gateway looks the cache up first).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from saferinstruct.llm.base import Backend, BackendConfigError, ChatRequest, ChatResult, Drain, backend_class

log = logging.getLogger(__name__)
RAY_MISSING = "engine 'ray' needs Ray, which is not installed: pip install 'saferinstruct[ray]'"
IN_FLIGHT_PER_REPLICA = 2  # one running, one queued: the actor never waits for the driver between shards


def import_ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError as err:
        if err.name != "ray":
            raise
        raise BackendConfigError(RAY_MISSING) from None
    return ray


class Replica:
    """One actor: the backend built in process from the replica options, loaded on its first shard."""

    def __init__(self, backend_name: str, options: dict[str, Any]):
        self.backend: Backend = backend_class(backend_name)(options)

    def generate(self, requests: list[ChatRequest]) -> list[tuple[int, ChatResult]]:
        return list(self.backend.run(requests))


class RayPool:
    def __init__(self, backend_name: str, options: Any):
        ray = import_ray()
        self._started = not ray.is_initialized()
        # a cluster named by address (auto, ray://, host:port) may autoscale: too few resources there only warn
        self._fixed_size = self._started and options.ray_address in (None, "local")
        if self._started:  # null address: a local cluster for this run; else join the one named
            ray.init(address=options.ray_address, include_dashboard=False, log_to_driver=True)
        self.batch_size = options.batch_size
        gpus, cpus, n = options.replica_gpus(), options.num_cpus_per_replica, options.replicas()
        self._check_resources(ray, n, gpus, cpus)
        actor = ray.remote(num_gpus=gpus, num_cpus=cpus)(Replica)
        self.actors = [actor.remote(backend_name, options.replica_options()) for _ in range(n)]

    def _check_resources(self, ray: Any, n: int, gpus: float, cpus: float) -> None:
        """Replicas that can never be placed would wait forever: say so instead (a cluster that autoscales may still
        grow, so there it is a warning)."""
        have = ray.cluster_resources()
        short = [f"{n} x {need:g} {kind} (the cluster has {have.get(kind, 0):g})"
                 for kind, need in (("GPU", gpus), ("CPU", cpus)) if n * need > have.get(kind, 0)]
        if not short:
            return
        msg = f"engine 'ray': {n} replicas need {' and '.join(short)}; lower num_replicas or num_*_per_replica"
        if self._fixed_size:
            raise BackendConfigError(msg)
        log.warning("%s; replicas wait until the cluster grows", msg)

    def run(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, ChatResult]]:
        """``(index, result)`` per request as shards finish. A failed shard stops new ones from starting; the shards
        in flight still come back (they are paid for), then the shard's own error is raised."""
        ray = import_ray()
        todo = deque(range(0, len(requests), self.batch_size))
        pending: dict[Any, tuple[int, int]] = {}  # shard future -> (actor, first request index)

        def launch(actor: int) -> None:
            if todo:
                start = todo.popleft()
                shard = list(requests[start:start + self.batch_size])
                pending[self.actors[actor].generate.remote(shard)] = (actor, start)

        for actor in range(len(self.actors)):
            for _ in range(IN_FLIGHT_PER_REPLICA):
                launch(actor)
        failure: BaseException | None = None
        try:
            while pending:
                [done], _ = ray.wait(list(pending), num_returns=1)
                actor, start = pending.pop(done)
                try:
                    results = ray.get(done)
                except ray.exceptions.RayError as err:
                    failure = failure or err
                    todo.clear()  # launch nothing more; the shards in flight still come back and are cached
                    continue
                for j, result in results:
                    try:
                        yield start + j, result
                    except Drain:
                        todo.clear()  # launch nothing more; what is in flight still comes back
                launch(actor)  # its next shard is already queued on it, so it never waits for this
        finally:
            for future in pending:  # the consumer stopped (closed the generator): drop queued shards
                ray.cancel(future)
        if failure is not None:
            raise _original(failure)

    def close(self) -> None:
        ray = import_ray()
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self._started:
            ray.shutdown()


def _original(err: BaseException) -> BaseException:
    """The exception a replica raised (a BackendConfigError stays one line), else Ray's own (a lost actor)."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err
