"""`siglip serve` over real HTTP (uvicorn on 127.0.0.1): every route, numbers equal to the model / pipeline / Index,
OpenAI-client requests, the API key, caps, the URL policy, metrics and the wedged-worker readiness check."""

from __future__ import annotations

import base64
import http.server
import json
import shutil
import socket
import threading
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES
from PIL import Image
from serve_helpers import ThreadServer, data_uri, encoded, image_features, rows, text_features

import siglip
from siglip.auto import AutoModel, AutoProcessor
from siglip.bulk import embed_source
from siglip.serve import Limits, create_app
from siglip.serve.security import is_private_address

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "horse.png"]
TEXTS = ["a cat", "A Dog, on the BEACH!", "", "word " * 80, "a cup of coffee"]  # long: truncated to 64 positions


@pytest.fixture(scope="module")
def collection(reference_checkpoint, tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("serve_photos")
    for name in PHOTOS:
        shutil.copy(FIXTURES / name, source / name)
    out = tmp_path_factory.mktemp("serve_collection") / "photos"
    assert embed_source(source, out, model=str(reference_checkpoint), shard_size=3, batch_size=4).ok == len(PHOTOS)
    return out


@pytest.fixture(scope="module")
def reference(reference_checkpoint):
    return AutoModel.from_pretrained(reference_checkpoint).eval(), AutoProcessor.from_pretrained(reference_checkpoint)


@pytest.fixture(scope="module")
def server(reference_checkpoint, collection):
    app = create_app(str(reference_checkpoint), [collection], max_batch_size=8, max_wait_ms=20, device="cpu")
    with ThreadServer(app) as running:
        yield running


@pytest.fixture(scope="module")
def photo_bytes() -> list[bytes]:
    return [(FIXTURES / name).read_bytes() for name in PHOTOS]


def test_health_ready_models_collections(server):
    assert server("/healthz").json == {"status": "ok"}
    ready = server("/readyz").json
    assert ready["status"] == "ready" and ready["collections"][0]["count"] == len(PHOTOS)
    assert server("/v1/models").json["data"][0]["object"] == "model"
    assert server("/v1/collections").json["collections"][0]["kind"] == "image"


def test_text_embeddings_equal_get_text_features(server, reference):
    model, processor = reference
    expected_raw = text_features(model, processor, TEXTS, normalize=False)
    reply = server("/v1/embeddings", {"input": TEXTS, "model": "whatever", "normalize": False})
    assert reply.status == 200 and reply.json["object"] == "list" and len(reply.json["data"]) == len(TEXTS)
    assert (rows(reply) - expected_raw).abs().max() <= 1e-6
    normalised = server("/v1/embeddings", {"input": TEXTS, "encoding_format": "base64"})
    assert (rows(normalised) - text_features(model, processor, TEXTS)).abs().max() <= 1e-6
    floats = server("/v1/embeddings", {"input": TEXTS})  # short decimals that read back as the same float32
    assert torch.equal(rows(floats), rows(normalised))
    assert all(len(repr(value)) <= 16 for item in floats.json["data"] for value in item["embedding"])
    single = server("/v1/embeddings", {"input": TEXTS[1]})  # a bare string, as OpenAI clients send one
    assert (rows(single)[0] - text_features(model, processor, TEXTS[1:2])[0]).abs().max() <= 1e-6
    usage = reply.json["usage"]
    assert (
        usage["prompt_tokens"] == usage["total_tokens"] == len(TEXTS) * model.config.text_config.max_position_embeddings
    )


def test_image_and_mixed_embeddings_equal_get_image_features(server, reference, photo_bytes):
    model, processor = reference
    inputs = [
        {"image": data_uri(photo_bytes[0])},
        {"text": "a cat"},
        {"image": base64.b64encode(photo_bytes[1]).decode()},  # bare base64
        {"image": data_uri(photo_bytes[3], "image/jpeg")},
    ]
    reply = server("/v1/embeddings", {"input": inputs, "normalize": False})
    assert reply.status == 200, reply.body
    got = rows(reply)
    expected = image_features(model, processor, [photo_bytes[0], photo_bytes[1], photo_bytes[3]], normalize=False)
    assert (got[[0, 2, 3]] - expected).abs().max() <= 1e-6
    assert (got[1] - text_features(model, processor, ["a cat"], normalize=False)[0]).abs().max() <= 1e-6


def test_classify_equals_pipeline_and_caches_labels(server, reference_checkpoint, photo_bytes):
    labels = ["an astronaut", "a cat", "a cup of coffee"]
    pipe = siglip.pipeline(model=str(reference_checkpoint))
    images = [Image.open(FIXTURES / name) for name in PHOTOS[:3]]
    expected = pipe(images, candidate_labels=labels, hypothesis_template="a photo of {}")
    body = {"images": [data_uri(b) for b in photo_bytes[:3]], "candidate_labels": labels}
    reply = server("/v1/classify", {**body, "hypothesis_template": "a photo of {}"})
    assert reply.status == 200, reply.body
    for got, want in zip(reply.json["results"], expected):
        assert [r["label"] for r in got] == [r["label"] for r in want]
        assert max(abs(g["score"] - w["score"]) for g, w in zip(got, want)) <= 1e-6
    before = _metric(server, 'siglip_label_cache_total{result="hit"}')
    again = server("/v1/classify", {"image": body["images"][0], "candidate_labels": labels[:2], "top_k": 1,
                                    "hypothesis_template": "a photo of {}"})  # fmt: skip
    assert again.status == 200 and len(again.json["results"][0]) == 1
    assert _metric(server, 'siglip_label_cache_total{result="hit"}') == before + 2  # no text pass for known labels


def test_search_equals_index_and_thumbnails(server, collection, reference, photo_bytes):
    model, processor = reference
    index = siglip.Index.open(collection)
    want = index.search_text(["a cat"], k=3, model=model, processor=processor)[0]
    for reply in (server("/v1/search", {"query": "a cat", "k": 3}), server("/v1/search?q=a%20cat&k=3")):
        assert reply.status == 200, reply.body
        got = reply.json["results"]
        assert [(h["path"], h["row"]) for h in got] == [(w.path, w.index) for w in want]
        assert max(abs(h["score"] - w.score) for h, w in zip(got, want)) <= 1e-6
    image_hits = server("/v1/search", {"image": data_uri(photo_bytes[2]), "k": 2}).json["results"]
    want = index.search_image([FIXTURES / PHOTOS[2]], k=2, model=model, processor=processor)[0]
    assert [h["row"] for h in image_hits] == [w.index for w in want]
    assert image_hits[0]["path"].endswith(PHOTOS[2])

    thumb = server(image_hits[0]["thumbnail"] + "?size=100")
    assert thumb.status == 200 and thumb.headers["content-type"] == "image/jpeg"
    with Image.open(__import__("io").BytesIO(thumb.body)) as image:
        assert max(image.size) == 128  # the next thumbnail size up
    assert server("/v1/items/999/thumbnail").status == 404
    assert server("/v1/items/..%2F..%2Fetc%2Fpasswd/thumbnail").status == 404  # ids only, never paths
    assert server("/v1/search", {"query": "x", "collection": "nope"}).json["error"]["type"] == "invalid_request"


def test_bad_requests_get_typed_4xx_naming_the_input(server, photo_bytes, tmp_path):
    cases = [
        ({"raw": b"{not json"}, 400, "invalid_json", None),
        ({"body": ["a list"]}, 400, "invalid_request", None),
        ({"body": {"input": []}}, 400, "invalid_request", "input"),
        ({"body": {"input": ["ok", 7]}}, 400, "invalid_request", "input[1]"),
        ({"body": {"input": ["ok", {"image": "not an image"}]}}, 400, "invalid_image", "input[1]"),
        ({"body": {"input": [{"image": data_uri(b"\x89PNG\r\n\x1a\ngarbage")}]}}, 400, "invalid_image", "input[0]"),
        ({"body": {"input": [{"image": data_uri(photo_bytes[0][:3000])}]}}, 400, "invalid_image", "input[0]"),
        ({"body": {"input": [{"text": "a", "image": "b"}]}}, 400, "invalid_request", "input[0]"),
        ({"body": {"input": ["x"] * 300}}, 413, "too_many_items", "input"),
        ({"body": {"input": ["x" * 20_000]}}, 413, "text_too_long", "input[0]"),
        ({"body": {"input": "a", "encoding_format": "int8"}}, 400, "invalid_request", "encoding_format"),
        ({"body": {"input": [{"image": "file:///etc/passwd"}]}}, 400, "url_not_allowed", "input[0]"),
        ({"body": {"input": [{"image": "http://127.0.0.1:1/x.png"}]}}, 400, "url_not_allowed", "input[0]"),
    ]
    for request, status, kind, param in cases:
        reply = server("/v1/embeddings", request.get("body"), raw=request.get("raw"))
        assert (reply.status, reply.json["error"]["type"]) == (status, kind), (request, reply.body)
        assert reply.json["error"].get("param") == param, reply.body
        assert "Traceback" not in reply.body.decode() and "/tmp" not in reply.body.decode()
    classify = server("/v1/classify", {"images": [data_uri(photo_bytes[0]), "junk"], "candidate_labels": ["a"]})
    assert classify.status == 400 and classify.json["error"]["param"] == "images[1]"
    assert server("/v1/classify", {"image": "x", "candidate_labels": []}).status == 400
    assert server("/nope").json["error"]["type"] == "not_found"
    assert server("/v1/embeddings", method="GET").status == 405


def test_body_cap_and_pixel_cap(reference_checkpoint, photo_bytes):
    limits = Limits(max_body_bytes=200_000, max_image_pixels=100_000)
    with ThreadServer(create_app(str(reference_checkpoint), limits=limits, device="cpu")) as small:
        big = small("/v1/embeddings", {"input": ["x" * 5000] * 50})
        assert big.status == 413 and big.json["error"]["type"] == "body_too_large"
        large_image = encoded(Image.new("RGB", (400, 300)))  # 120,000 pixels
        refused = small("/v1/embeddings", {"input": ["a", {"image": data_uri(large_image)}]})
        assert refused.status == 413 and refused.json["error"]["param"] == "input[1]"
        assert (
            small("/v1/embeddings", {"input": [{"image": data_uri(encoded(Image.new("RGB", (300, 300))))}]}).status
            == 200
        )


def test_openai_client(reference_checkpoint, reference):
    openai = pytest.importorskip("openai")
    model, processor = reference
    app = create_app(str(reference_checkpoint), api_key="s3cret", model_name="siglip-test", device="cpu")
    with ThreadServer(app) as secured:
        client = openai.OpenAI(base_url=secured.url + "/v1", api_key="s3cret", max_retries=0)
        response = client.embeddings.create(model="siglip-test", input=TEXTS[:3])  # sends encoding_format=base64
        got = torch.tensor([item.embedding for item in response.data])
        assert (got - text_features(model, processor, TEXTS[:3])).abs().max() <= 1e-6
        assert response.model == "siglip-test" and response.usage.prompt_tokens > 0
        floats = client.embeddings.create(model="siglip-test", input="a cat", encoding_format="float")
        assert len(floats.data[0].embedding) == got.shape[1]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=secured.url + "/v1", api_key="wrong", max_retries=0).embeddings.create(
                model="m", input="a"
            )


def test_api_key_on_every_route_but_health(reference_checkpoint, collection):
    app = create_app(str(reference_checkpoint), [collection], api_key="k3y", device="cpu")
    with ThreadServer(app) as secured:
        for path in ("/healthz", "/readyz"):
            assert secured(path).status == 200
        for path, body in [("/v1/embeddings", {"input": "a"}), ("/metrics", None), ("/v1/search?q=a", None),
                           ("/v1/items/0/thumbnail", None), ("/v1/models", None)]:  # fmt: skip
            assert secured(path, body).status == 401
            assert secured(path, body, headers={"Authorization": "Bearer wrong"}).status == 401
            assert secured(path, body, headers={"Authorization": "Bearer k3y"}).status == 200, path
        assert secured("/v1/embeddings", {"input": "a"}, headers={"Authorization": "k3y"}).status == 401


class _ImageHandler(http.server.BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/redirect-ftp":
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/x.png")
            self.end_headers()
            return
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/image.png")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args) -> None:
        pass


def test_url_inputs_refused_by_default_and_private_addresses_checked(reference_checkpoint, reference, photo_bytes):
    model, processor = reference
    handler = type("Handler", (_ImageHandler,), {"payload": photo_bytes[0]})
    images = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=images.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{images.server_address[1]}"
    try:
        public_only = create_app(str(reference_checkpoint), allow_urls=True, device="cpu")
        with ThreadServer(public_only) as server:
            for target in (url + "/image.png", f"http://localhost:{images.server_address[1]}/image.png"):
                reply = server("/v1/embeddings", {"input": [{"image": target}]})
                assert reply.status == 400 and reply.json["error"]["type"] == "url_not_allowed", reply.body
                assert "private" in reply.json["error"]["message"]
        private_ok = create_app(str(reference_checkpoint), allow_urls=True, allow_private_urls=True, device="cpu")
        with ThreadServer(private_ok) as server:
            for target in (url + "/image.png", url + "/redirect"):
                reply = server("/v1/embeddings", {"input": [{"image": target}]})
                assert reply.status == 200, reply.body
                assert (rows(reply) - image_features(model, processor, photo_bytes[:1])).abs().max() <= 1e-6
            refused = server("/v1/embeddings", {"input": [{"image": url + "/redirect-ftp"}]})
            assert refused.status == 400 and refused.json["error"]["param"] == "input[0]"
    finally:
        images.shutdown()
    for address in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "fe80::1", "224.0.0.1",
                    "::ffff:127.0.0.1", "0.0.0.0", "fd00::1"):  # fmt: skip
        assert is_private_address(address), address
    for address in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"):
        assert not is_private_address(address), address


def test_metrics_count_requests_batches_and_errors(server):
    server("/v1/embeddings", {"input": ["a", "b", "c"]})
    server("/v1/embeddings", {"input": [1]})
    text = server("/metrics").body.decode()
    for name in ("siglip_requests_total", "siglip_request_duration_seconds_bucket", "siglip_batch_size_bucket",
                 'siglip_queue_depth{queue="text"}', "siglip_label_cache_total", "siglip_requests_in_flight"):  # fmt: skip
        assert name in text, name
    assert _metric(server, 'siglip_errors_total{route="/v1/embeddings",type="invalid_request"}') >= 1
    assert _metric(server, 'siglip_batch_size_count{queue="text"}') >= 1


def test_readyz_turns_red_while_the_model_worker_is_wedged(reference_checkpoint):
    app = create_app(str(reference_checkpoint), stall_timeout_s=0.2, max_wait_ms=1, device="cpu")
    with ThreadServer(app) as server:
        release = threading.Event()
        app.state.engine.model_executor.submit(release.wait)  # the model thread is stuck in "a model call"
        replies = []
        waiting = threading.Thread(target=lambda: replies.append(server("/v1/embeddings", {"input": "a"})))
        waiting.start()
        try:
            assert _poll(lambda: server("/readyz").status == 503)
            assert "model worker" in server("/readyz").json["reason"]
            assert server("/healthz").status == 200  # the process is up; it is just not ready
        finally:
            release.set()
        waiting.join(timeout=30)
        assert replies and replies[0].status == 200
        assert _poll(lambda: server("/readyz").status == 200)


def test_full_queue_answers_503_with_retry_after(reference_checkpoint):
    app = create_app(str(reference_checkpoint), max_queue=4, max_wait_ms=1, device="cpu")
    with ThreadServer(app) as server:
        release = threading.Event()
        app.state.engine.model_executor.submit(release.wait)
        first = threading.Thread(target=lambda: server("/v1/embeddings", {"input": ["a", "b", "c"]}))
        first.start()
        try:
            assert _poll(lambda: app.state.engine.text.batch_started is not None)  # its batch waits for the thread
            second = threading.Thread(target=lambda: server("/v1/embeddings", {"input": ["d", "e", "f"]}))
            second.start()
            assert _poll(lambda: app.state.engine.text.depth() == 3)
            reply = server("/v1/embeddings", {"input": ["g", "h"]})
            assert reply.status == 503 and reply.headers["retry-after"] == "1"
            assert reply.json["error"]["type"] == "overloaded"
        finally:
            release.set()
        first.join(timeout=30)
        second.join(timeout=30)
        assert server("/v1/embeddings", {"input": ["g", "h"]}).status == 200


def _metric(server, series: str) -> float:
    for line in server("/metrics").body.decode().splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _poll(condition, timeout: float = 20.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_search_with_ann_once_the_graph_is_built(server, collection, reference):
    pytest.importorskip("usearch")
    model, processor = reference
    refused = server("/v1/search", {"query": "a cat", "ann": True})
    assert refused.status == 400 and "siglip index" in refused.json["error"]["message"]
    siglip.Index.open(collection).build_ann(queries=5)  # what `siglip index DIR` does, while the server runs
    index = siglip.Index.open(collection)
    want = index.search_text(["a cat"], k=3, ann=True, model=model, processor=processor)[0]
    got = server("/v1/search?q=a+cat&k=3&ann=true").json["results"]
    assert [h["row"] for h in got] == [w.index for w in want]


def test_a_client_that_hangs_up_leaves_no_queued_work_and_deadlines_answer_504_or_408(reference_checkpoint):
    app = create_app(str(reference_checkpoint), max_wait_ms=1, request_timeout_s=1.0, device="cpu")
    with ThreadServer(app) as server:
        text = app.state.engine.text
        release = threading.Event()
        app.state.engine.model_executor.submit(release.wait)
        try:
            blocker = threading.Thread(target=lambda: server("/v1/embeddings", {"input": "first"}))
            blocker.start()
            assert _poll(lambda: text.batch_started is not None)  # a batch holds the (stuck) model thread
            body = json.dumps({"input": ["a", "b", "c"]}).encode()
            head = f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(head.encode() + body)
                assert _poll(lambda: text.depth() == 3)
            assert _poll(lambda: text.depth() == 0)  # hung up: its items left the queue, the model never saw them
            late = server("/v1/embeddings", {"input": ["d", "e"]})
            assert late.status == 504 and late.json["error"]["type"] == "timeout"
            assert text.depth() == 0
        finally:
            release.set()
        blocker.join(timeout=30)
        assert _metric(server, 'siglip_errors_total{route="/v1/embeddings",type="client_closed"}') == 1
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:  # a body that never ends
            sock.sendall(head.encode() + body[:5])
            assert sock.recv(4096).startswith(b"HTTP/1.1 408")
        assert _poll(lambda: _metric(server, 'siglip_items_total{queue="text"}') == 1)  # the stuck batch ends
        assert _metric(server, 'siglip_items_total{queue="text"}') == 1  # only "first" was ever embedded
