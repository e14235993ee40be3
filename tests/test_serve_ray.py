"""`siglip serve --ray` on a local Ray instance: two Ray Serve replicas of the app (one model each) behind Ray's
proxy on 127.0.0.1, one request per route, answers equal to the model's. Skipped where Ray Serve cannot start."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from conftest import FIXTURES
from serve_helpers import call, data_uri, free_port, text_features

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png"]
READY_S = 240  # an upper bound for two replicas to load on a busy 2-core machine, not a timing assertion


@pytest.fixture(scope="module")
def collection(reference_checkpoint, tmp_path_factory) -> Path:
    from siglip.bulk import embed_source

    source = tmp_path_factory.mktemp("ray_photos")
    for name in PHOTOS:
        shutil.copy(FIXTURES / name, source / name)
    out = tmp_path_factory.mktemp("ray_collection") / "photos"
    assert embed_source(source, out, model=str(reference_checkpoint)).ok == len(PHOTOS)
    return out


@pytest.fixture(scope="module")
def ray_server(reference_checkpoint, collection):
    serve = pytest.importorskip("ray.serve")
    import ray

    from siglip.serve.ray_deployment import APP_NAME, build_application

    port = free_port()
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
        serve.start(http_options={"host": "127.0.0.1", "port": port})
    except Exception as error:  # no Ray Serve here (sandbox, ports): the deployment cannot be tested
        ray.shutdown()
        pytest.skip(f"Ray Serve cannot start here: {type(error).__name__}: {error}")
    try:
        # half a CPU each: two replicas fit the two-CPU instance
        app = build_application(
            str(reference_checkpoint), [collection], num_replicas=2, cpus_per_replica=0.5, device="cpu", max_wait_ms=10
        )
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + READY_S
        while not _ready(url):
            assert time.monotonic() < deadline, f"the Ray Serve app did not become ready: {serve.status()}"
            time.sleep(0.5)
        yield url, serve
    finally:
        serve.shutdown()
        ray.shutdown()


def _ready(url: str) -> bool:
    try:
        return call(url + "/readyz").status == 200
    except OSError:
        return False


def test_every_route_through_ray_serve(ray_server, reference_checkpoint):
    from siglip.auto import AutoModel, AutoProcessor

    url, serve = ray_server
    replicas = serve.status().applications["siglip"].deployments["siglip"].replica_states
    assert replicas.get("RUNNING") == 2

    assert call(url + "/healthz").json == {"status": "ok"}
    assert call(url + "/readyz").json["collections"][0]["count"] == len(PHOTOS)
    assert call(url + "/v1/models").status == 200
    metrics = call(url + "/metrics")
    assert metrics.status == 200 and b"# TYPE" in metrics.body

    model = AutoModel.from_pretrained(reference_checkpoint).eval()
    processor = AutoProcessor.from_pretrained(reference_checkpoint)
    texts = ["a cat", "a cup of coffee"]
    reply = call(url + "/v1/embeddings", {"input": texts})
    got = [row["embedding"] for row in sorted(reply.json["data"], key=lambda row: row["index"])]
    import torch

    assert (torch.tensor(got) - text_features(model, processor, texts)).abs().max() <= 1e-6

    photo = data_uri((FIXTURES / "coffee.png").read_bytes())
    classify = call(url + "/v1/classify", {"image": photo, "candidate_labels": ["a cat", "a cup"]})
    assert classify.status == 200 and len(classify.json["results"][0]) == 2

    by_text = call(url + "/v1/search?q=a+cat&k=2").json["results"]
    assert len(by_text) == 2
    by_image = call(url + "/v1/search", {"image": photo, "k": 1}).json["results"]
    assert Path(by_image[0]["path"]).name == "coffee.png" and by_image[0]["score"] == pytest.approx(1.0, abs=1e-5)
    thumbnail = call(url + by_image[0]["thumbnail"])
    assert thumbnail.status == 200 and thumbnail.body[:2] == b"\xff\xd8"  # a JPEG
    page = call(url + "/")
    assert page.status == 200 and b"siglip" in page.body and b"static/app.js" in page.body
    bad = call(url + "/v1/classify", {"image": "data:image/png;base64,AAAA", "candidate_labels": ["x"]})
    assert bad.status == 400 and bad.json["error"]["type"] == "invalid_image"
