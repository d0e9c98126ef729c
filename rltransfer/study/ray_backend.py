"""Ray: a study's runs as tasks on a Ray cluster (`--backend ray`).

The tasks write their run folders themselves, so `--out` must be a folder every node shares.
Before anything is written, `ray_session` joins the cluster (an address where no cluster
answers is a one-line error within seconds, not Ray's minutes of retries; without
`--address` a local instance is started, whatever cluster file an earlier one left) and has
every node that can hold a run read a token the study wrote into `--out`. During the study,
`RayBackend` retries the runs of a lost node (or a killed worker process) on the others, from
their last checkpoint, says so, and fails the runs that no alive node can hold once
`WAIT_FOR_NODES` seconds have passed without one.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MissingDependencyError
from .execution import Execution, Job, Outcome, _state, execute

RAY_RETRIES = 3  # times a run is started again after its node or worker process was lost
PROBE_TIMEOUT = 5.0  # seconds for the cluster's address to accept a connection
NODE_CHECK_TIMEOUT = 60.0  # seconds for every node to read the --out token
CHECK_EVERY = 5.0  # seconds between looks at the cluster's nodes during a study
WAIT_FOR_NODES = 600.0  # seconds runs wait for a node that can hold them before failing
SHARED = ("--out must be a folder every node of the cluster sees at the same path (NFS, "
          "Lustre, a mounted bucket)")


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("--backend ray needs Ray: pip install "
                                     "'rltransfer[ray]'") from None
    return ray


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _task_error(err: BaseException) -> str:
    """One line for a task's failure: the error raised in the task (a RayTaskError's first
    line only names the task), or Ray's (its node died, its worker was killed)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {_first_line(cause)}"
    return re.sub(r"\x1b\[[0-9;]*m", "", _first_line(err))


def check_address(address: str | None) -> None:
    """A one-line ConfigError unless a Ray cluster answers at `address` ("auto": the one
    `ray start` last started here, or $RAY_ADDRESS). Ray itself would retry an unreachable
    address for minutes."""
    if address is None or address == "local":
        return
    _ray()
    fix = "start one with 'ray start --head' (it prints its address), or drop --address for " \
          "a local instance"
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # pragma: no cover - a Ray without it: let ray.init say
        return
    try:
        found = canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError) as err:
        raise ConfigError(f"no Ray cluster found for --address {address} "
                          f"({_first_line(err)}): {fix}") from None
    if found is None:
        return
    host, _, port = found.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT).close()
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or _first_line(err)
        raise ConfigError(f"no Ray cluster answers at --address {address} ({found}: "
                          f"{reason}): {fix}") from None


_RAY_PRINT: dict[str, Any] = {}  # Ray's printer of the cluster's error messages, while replaced


def _first_lines_only(worker: Any) -> None:
    """Have Ray print the first line of each error message the cluster pushes to this
    driver (a lost node's came with a 20-line state dump of its raylet); the study says
    what it means for the runs itself."""
    original = _RAY_PRINT.setdefault("print", worker.print_to_stdstream)

    def first_lines(data: dict[str, Any], ignore_prefix: bool) -> None:
        lines = [line.strip().splitlines()[0] for line in data.get("lines", []) if line.strip()]
        original({**data, "lines": lines}, ignore_prefix)

    worker.print_to_stdstream = first_lines


def disconnect() -> None:
    """Shut down the Ray that `connect` started."""
    ray = _ray()
    ray.shutdown()
    if "print" in _RAY_PRINT:
        import ray._private.worker as worker

        worker.print_to_stdstream = _RAY_PRINT.pop("print")


def connect(execution: Execution) -> bool:
    """Join the cluster at `execution.address`, or start a local instance without one;
    whether this call started Ray (False: it was running already)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    check_address(execution.address)
    handler = signal.getsignal(signal.SIGTERM)  # ray.init replaces it with sys.exit
    try:
        # "local" starts an instance for sure: with None, Ray joins whatever cluster
        # /tmp/ray/ray_current_cluster names, even one that was killed.
        ray.init(address=execution.address or "local", include_dashboard=False,
                 log_to_driver=False, logging_level="ERROR")
    except Exception as err:  # noqa: BLE001 - e.g. an authentication token that differs
        where = (f"join the Ray cluster at --address {execution.address}"
                 if execution.address else "start a local Ray instance")
        raise ConfigError(f"could not {where}: {_first_line(err)}") from None
    finally:
        signal.signal(signal.SIGTERM, handler)
    try:
        import ray._private.worker as worker

        _first_lines_only(worker)
    except (ImportError, AttributeError):  # pragma: no cover - another Ray: its full text
        pass
    return True


def _fits(node: dict[str, Any], execution: Execution) -> bool:
    """Whether `node` (an entry of ray.nodes()) has the resources of one run."""
    resources = node.get("Resources", {})
    return (resources.get("CPU", 0.0) >= (execution.cpus_per_run or 1.0)
            and resources.get("GPU", 0.0) >= (execution.gpus_per_run or 0.0))


def _alive(ray: Any) -> dict[str, dict[str, Any]]:
    return {node["NodeID"]: node for node in ray.nodes() if node.get("Alive")}


def _name(node: dict[str, Any]) -> str:
    return f"{node.get('NodeManagerAddress', '?')} (node {node['NodeID'][:8]})"


def _reads_token(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


def check_nodes_see(out: Path, execution: Execution) -> None:
    """A one-line ConfigError unless every alive node that can hold a run reads the token
    this process writes into `out` (or, while it does not exist yet, the folder above it
    that will hold it); the token is removed again."""
    ray = _ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    folder = out.resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    token = secrets.token_hex(16)
    path = folder / f".rltransfer-node-check-{token[:12]}"
    path.write_text(token)
    task = ray.remote(_reads_token)
    try:
        nodes = [node for node in _alive(ray).values() if _fits(node, execution)]
        refs = {task.options(num_cpus=0, max_retries=0, scheduling_strategy=(
            NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))).remote(
                str(path), token): node for node in nodes}
        ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=NODE_CHECK_TIMEOUT)
        for ref in ready:
            node = refs[ref]
            try:
                seen = ray.get(ref)
            except ray.exceptions.TaskUnschedulableError:
                continue  # the node died since it was listed: no run goes there
            except Exception as err:  # noqa: BLE001 - e.g. rltransfer is not installed there
                raise ConfigError(f"Ray node {_name(node)} could not check that it sees --out "
                                  f"{out} ({_first_line(err)}): rltransfer must be installed "
                                  f"on every node, and {SHARED}") from None
            if not seen:
                raise ConfigError(f"Ray node {_name(node)} does not see --out {out} (a file "
                                  f"written there is not found on that node): {SHARED}")
        for ref in late:  # its runs check the study folder themselves when they start
            ray.cancel(ref, force=True)
    finally:
        path.unlink(missing_ok=True)


@contextmanager
def ray_session(execution: Execution, out: Path) -> Iterator[None]:
    """With `--backend ray`: join (or start) Ray and check that every node sees `out`,
    before the study writes anything; Ray is shut down at the end if it was started here.
    Other backends: nothing."""
    if execution.backend != "ray":
        yield
        return
    started = connect(execution)
    try:
        check_nodes_see(out, execution)
        yield
    finally:
        if started:
            disconnect()


def _study_folder(job: Job) -> Path | None:
    for folder in list(Path(job.run_dir).parents)[:2]:  # source/ or <condition>/seed_N
        if (folder / "study.json").is_file():
            return folder
    return None


def _ray_execute(job: Job, events: Any) -> Outcome:
    """A run as a Ray task: it tells the study its node, checks that the node sees the
    study folder, and continues from its checkpoint when an earlier attempt of it was cut
    short (its status still says running: its node or worker process was lost)."""
    import ray

    context = ray.get_runtime_context()
    events.put(("node", job.key, context.get_node_id()))
    if _study_folder(job) is None:
        where = socket.gethostname()
        return Outcome(job.key, False, error=f"Ray node {where} (node "
                                             f"{context.get_node_id()[:8]}) does not see the "
                                             f"study folder {Path(job.run_dir).parent}: {SHARED}")
    if not job.resume and _state(job) == "running":
        job = dataclasses.replace(job, resume=True)
    return execute(job, events)


class RayBackend:
    """Each job is a Ray task with `cpus_per_run` CPUs and `gpus_per_run` GPUs (fractions
    share a GPU); Ray places them on the cluster's nodes. A task whose node or worker process
    is lost runs again elsewhere (`RAY_RETRIES` times), from its run's checkpoint."""

    capacity = 1_000_000  # Ray queues tasks until resources free up

    def __init__(self, execution: Execution) -> None:
        ray = _ray()
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._ray, self._execution = ray, execution
        self._started = connect(execution)
        here = ray.get_runtime_context().get_node_id()
        # Progress goes through a queue on this node: lost with another node, it would
        # take every run's progress with it.
        self._events = Queue(actor_options={"num_cpus": 0, "scheduling_strategy":
                                            NodeAffinitySchedulingStrategy(here, soft=False)})
        self._task = ray.remote(_ray_execute).options(
            num_cpus=execution.cpus_per_run or 1.0, num_gpus=execution.gpus_per_run or 0.0,
            max_retries=RAY_RETRIES, retry_exceptions=False)
        self._refs: dict[Any, Job] = {}
        self._node_of: dict[str, str] = {}  # key -> the node its task runs on
        self._lost: dict[str, str] = {}  # key -> the lost node its task ran on
        self._nodes = _alive(ray)
        self._next_look = time.monotonic() + CHECK_EVERY
        self._no_room_since: float | None = None

    def submit(self, job: Job) -> None:
        self._refs[self._task.remote(job, self._events)] = job

    def wait(self, timeout: float) -> list[tuple[str, str, Any]]:
        items: list[tuple[str, str, Any]] = []
        try:
            items.append(self._events.get(block=True, timeout=timeout))
            size = self._events.qsize()
            if size:
                items += self._events.get_nowait_batch(size)
        except Exception:  # noqa: BLE001, S110 - ray.util.queue.Empty
            pass
        notes: list[tuple[str, str, Any]] = []
        for item in items:
            if item[0] == "node":
                notes += self._placed(item[1], item[2])
        items = [item for item in items if item[0] != "node"] + notes
        ready, _ = self._ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
        for ref in ready:
            job = self._refs.pop(ref)
            self._node_of.pop(job.key, None)
            try:
                outcome = self._ray.get(ref)
            except Exception as err:  # noqa: BLE001 - the task or its node died (retries spent)
                outcome = Outcome(job.key, False, error=f"Ray task failed: {_task_error(err)}")
            items.append(("done", job.key, outcome))
        if time.monotonic() >= self._next_look:
            self._next_look = time.monotonic() + CHECK_EVERY
            items += self._look_at_nodes()
        return items

    def _placed(self, key: str, node_id: str) -> list[tuple[str, str, Any]]:
        """A task says where it runs: a note when that is its second node (a retry)."""
        before = self._node_of.get(key) or self._lost.pop(key, None)
        self._node_of[key] = node_id
        if before is None or before == node_id:
            return []
        label = next((job.label for job in self._refs.values() if job.key == key), key)
        return [("note", "", f"{label}: its Ray node {before[:8]} was lost; it runs again on "
                             f"node {node_id[:8]}")]

    def _look_at_nodes(self) -> list[tuple[str, str, Any]]:
        """Notes on lost nodes; failures for the runs that waited `WAIT_FOR_NODES` seconds
        with no alive node that can hold one."""
        alive = _alive(self._ray)
        notes: list[tuple[str, str, Any]] = []
        for node_id, node in self._nodes.items():
            if node_id in alive:
                continue
            keys = sorted(k for k, n in self._node_of.items() if n == node_id)
            for key in keys:
                self._lost[key] = self._node_of.pop(key)  # waiting again, for its retry
            labels = [job.label for job in self._refs.values() if job.key in keys]
            notes.append(("note", "", f"Ray node {_name(node)} was lost"
                          + (f" with {len(labels)} run(s) ({', '.join(labels)}): they start "
                             f"again on the other nodes, from their last checkpoint"
                             if labels else "")))
        self._nodes = alive
        waiting = [ref for ref, job in self._refs.items() if job.key not in self._node_of]
        if not waiting or any(_fits(node, self._execution) for node in alive.values()):
            self._no_room_since = None
            return notes
        e = self._execution
        need = f"{e.cpus_per_run or 1:g} CPU and {e.gpus_per_run or 0:g} GPU"
        now = time.monotonic()
        if self._no_room_since is None:
            self._no_room_since = now
            return notes + [("note", "", f"warning: no alive Ray node has {need} for a run: "
                             f"{len(waiting)} run(s) wait for a node to join, and fail in "
                             f"{WAIT_FOR_NODES:g} s without one")]
        if now - self._no_room_since < WAIT_FOR_NODES:
            return notes
        for ref in waiting:
            job = self._refs.pop(ref)
            self._ray.cancel(ref, force=True)
            notes.append(("done", job.key, Outcome(
                job.key, False, error=f"no alive Ray node had {need} for {WAIT_FOR_NODES:g} s "
                                      f"(nodes lost?)")))
        self._no_room_since = None
        return notes

    def close(self, interrupted: bool) -> None:
        if interrupted:  # KeyboardInterrupt in each task: its run is marked interrupted
            for ref in list(self._refs):
                self._ray.cancel(ref)
            self._ray.wait(list(self._refs), num_returns=len(self._refs), timeout=10)
        try:
            self._events.shutdown()
        except Exception:  # noqa: BLE001, S110 - best effort on the way out
            pass
        if self._started:
            disconnect()
