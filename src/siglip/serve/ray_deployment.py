"""`siglip serve --ray`: the same ASGI app (`create_app`) as N Ray Serve replicas, one model per replica.

    from ray import serve
    from siglip.serve.ray_deployment import build_application

    serve.start(http_options={"host": "127.0.0.1", "port": 8000})
    serve.run(build_application("google/siglip-base-patch16-224", ["photos.emb"], num_replicas=4), route_prefix="/")

Each replica builds `create_app(model, collections, **options)` in its own process (`serve.ingress` with a
function that makes the app at replica start), so every route, cap, the API key, the dynamic batcher and the web page behave exactly as
in `siglip serve`; Ray Serve's proxy spreads requests over the replicas. With GPUs (`device` cuda/auto and a
cluster that has them) each replica reserves one GPU and the default replica count is the cluster's GPU count;
on CPUs it is one replica (more only help on more cores or machines). A wedged model worker fails the replica's
health check (the same test as /readyz), so Ray restarts that replica.

Every node needs the same Python environment (siglip[serve,ray]) and the model and collection folders at the same
path (or a Hub id each node can resolve).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DependencyError, InputError

DEPLOYMENT_NAME = "siglip"
APP_NAME = "siglip"


def _require_serve() -> Any:
    try:
        from ray import serve
    except ImportError as error:
        raise DependencyError(
            f"siglip serve --ray needs Ray Serve: pip install 'siglip[serve,ray]' ({error})"
        ) from None
    return serve


def _absolute(name_or_path: str | os.PathLike) -> str:
    """A folder that exists here becomes absolute (replicas do not share the driver's working directory); a Hub
    id stays as it is."""
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else str(name_or_path)


def _wants_gpu(device: Any) -> bool:
    return str(device).startswith("cuda") or str(device) == "auto"


def _cluster_gpus() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0


class SiglipReplica:
    """The replica class behind `serve.ingress`: Ray Serve builds the app (and so loads the model) in the replica
    process, and calls `check_health` periodically."""

    def check_health(self) -> None:
        """Raising marks the replica unhealthy and Ray replaces it: the test of /readyz (a wedged model worker)."""
        app = getattr(self, "app", None)  # the ASGI app, set by Ray Serve's ingress wrapper
        reason = app.state.engine.stalled() if app is not None else None
        if reason:
            raise RuntimeError(f"model worker: {reason}")


def build_application(
    model: str | os.PathLike,
    collections: Sequence[str | os.PathLike] = (),
    *,
    num_replicas: int | None = None,
    gpus_per_replica: float | None = None,
    cpus_per_replica: float = 1.0,
    **options: Any,
) -> Any:
    """A bound Ray Serve application serving `create_app(model, collections, **options)` on `num_replicas`
    replicas (default: one per GPU of the running cluster when `device` allows GPUs and there are some, else 1).
    `gpus_per_replica` defaults to 1 on GPUs, 0 on CPUs. Pass the result to `serve.run(...)`."""
    serve = _require_serve()
    device = options.get("device", "auto")
    gpus = _cluster_gpus() if _wants_gpu(device) else 0
    if gpus_per_replica is None:
        gpus_per_replica = 1.0 if gpus else 0.0
    if num_replicas is None:
        num_replicas = max(1, int(gpus // gpus_per_replica)) if gpus_per_replica else 1
    if num_replicas < 1:
        raise InputError(f"num_replicas must be >= 1, got {num_replicas}")
    if gpus_per_replica == 0 and str(device).startswith("cuda"):
        raise InputError(f"device={device!r} but the Ray cluster has no GPU: use device='cpu'")
    model, folders = _absolute(model), [_absolute(folder) for folder in collections]

    def make_app() -> Any:  # runs in each replica: only these arguments travel, pickled with the deployment
        from siglip.serve.app import create_app

        return create_app(model, folders, **options)

    ingress = serve.ingress(make_app)(SiglipReplica)
    deployment = serve.deployment(
        ingress,
        name=DEPLOYMENT_NAME,
        num_replicas=num_replicas,
        ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
        # A replica handles many requests at once: concurrency is what lets its batcher form batches.
        max_ongoing_requests=max(64, 2 * options.get("max_batch_size", 32)),
    )
    return deployment.bind()


def run_cli(args: argparse.Namespace, app_options: dict[str, Any]) -> int:
    """`siglip serve --ray`: start (or join, with RAY_ADDRESS) a Ray instance, deploy, block until SIGTERM or
    Ctrl-C, then shut Ray Serve down (it drains the replicas' requests in flight) and exit 0."""
    serve = _require_serve()
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False)
    application = build_application(args.model, args.collections, num_replicas=args.num_replicas, **app_options)
    serve.start(http_options={"host": args.host, "port": args.port})
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.run(application, name=APP_NAME, route_prefix="/", blocking=False)
        print(f"siglip serve --ray: ready at http://{args.host}:{args.port}/ (Ctrl-C stops)", file=sys.stderr)
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0
