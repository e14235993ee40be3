"""`siglip serve` under faults, as a real subprocess on 127.0.0.1: good clients stay correct while others send
corrupt, tiny and bomb-sized images, oversize bodies, wrong JSON and disconnect mid-request; SIGTERM drains."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import FIXTURES
from PIL import Image
from serve_helpers import ProcessServer, bomb_png, call, data_uri, encoded, image_features, rows, text_features

from siglip.auto import AutoModel, AutoProcessor

GOOD_CLIENTS, ROUNDS, BAD_CLIENTS = 16, 4, 6
BODY_CAP = 300_000
PNGS = ("astronaut.png", "chelsea.png", "coffee.png")


@pytest.fixture(scope="module")
def reference(reference_checkpoint):
    return AutoModel.from_pretrained(reference_checkpoint).eval(), AutoProcessor.from_pretrained(reference_checkpoint)


def _raw_exchange(port: int, payload: bytes, read: bool = False) -> None:
    """Send raw bytes and hang up (optionally after reading the answer): a client that goes away."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        if read:
            sock.recv(65536)


def _request_bytes(path: str, body: bytes, declared: int | None = None) -> bytes:
    length = len(body) if declared is None else declared
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    return head.encode() + body


def test_good_clients_stay_correct_while_bad_clients_misbehave(reference_checkpoint, reference):
    model, processor = reference
    # real photos, downscaled PNGs (small bodies) and one JPEG as it is
    photos = [encoded(Image.open(FIXTURES / name).convert("RGB").resize((96, 80))) for name in PNGS]
    photos.append((FIXTURES / "rocket.jpg").read_bytes())
    tiny = encoded(Image.new("RGB", (1, 1), (200, 30, 30)))  # valid: served, not stalled (Infinity's 1x1 bug)
    images = [*photos, tiny]
    texts = [f"a photo of thing number {i}" for i in range(GOOD_CLIENTS)]
    want_images = image_features(model, processor, images)
    want_texts = text_features(model, processor, texts)

    args = ["--model", str(reference_checkpoint), "--device", "cpu", "--max-wait-ms", "5"]
    args += ["--max-body-bytes", str(BODY_CAP), "--max-image-pixels", "20000000"]
    with ProcessServer(*args) as server:
        corrupt = data_uri(photos[0][: len(photos[0]) // 3])
        bad_requests = [
            ({"input": [{"image": corrupt}]}, 400),
            ({"input": ["fine", {"image": data_uri(bomb_png())}]}, 413),
            ({"input": [{"image": data_uri(b"GIF89a not really")}]}, 400),
            ({"input": ["x" * 1000] * (BODY_CAP // 1000 + 50)}, 413),  # oversize body, within the drain bound
            ({"input": [{"image": "data:image/png;base64,!!!!"}]}, 400),
            ({"inputs": "misspelt field"}, 400),
        ]
        warm = [server("/v1/embeddings", body).status for body, _ in bad_requests]
        warm.append(server("/v1/embeddings", {"input": [{"image": data_uri(p)} for p in images]}).status)
        assert warm == [status for _, status in bad_requests] + [200]
        rss_before = server.rss_bytes()

        failures: list[str] = []
        bad_statuses: list[int] = []
        ready: list[int] = []
        done = threading.Event()

        def good(client: int) -> None:
            for round_ in range(ROUNDS):
                picks = [(client + round_ + j) % len(images) for j in range(2)]
                body = {"input": [texts[client], *({"image": data_uri(images[p])} for p in picks)]}
                reply = server("/v1/embeddings", body)
                if reply.status != 200:
                    failures.append(f"client {client}: {reply.status} {reply.body[:200]!r}")
                    continue
                got = rows(reply)
                error = max(
                    (got[0] - want_texts[client]).abs().max().item(),
                    (got[1:] - want_images[picks]).abs().max().item(),
                )
                if error > 1e-5:
                    failures.append(f"client {client}: embeddings off by {error}")

        def bad(client: int) -> None:
            step = client
            while not done.is_set():
                kind = step % (len(bad_requests) + 3)
                step += 1
                if kind < len(bad_requests):
                    body, _ = bad_requests[kind]
                    bad_statuses.append(server("/v1/embeddings", body).status)
                elif kind == len(bad_requests):
                    raw = server("/v1/embeddings", raw=b'{"input": ["unterminated"')
                    bad_statuses.append(raw.status)
                elif kind == len(bad_requests) + 1:  # hangs up halfway through its body
                    _raw_exchange(server.port, _request_bytes("/v1/embeddings", b'{"input": ["aa', declared=5000))
                else:  # sends a whole image request, then hangs up without reading the answer
                    body = json.dumps({"input": [{"image": data_uri(photos[1])}] * 4}).encode()
                    _raw_exchange(server.port, _request_bytes("/v1/embeddings", body))

        def probe() -> None:
            while not done.is_set():
                ready.append(call(server.url + "/readyz").status)
                time.sleep(0.05)

        threads = [threading.Thread(target=good, args=(i,)) for i in range(GOOD_CLIENTS)]
        others = [threading.Thread(target=bad, args=(i,)) for i in range(BAD_CLIENTS)]
        others.append(threading.Thread(target=probe))
        for thread in threads + others:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        done.set()
        for thread in others:
            thread.join(timeout=60)

        assert not failures, failures[:5]
        assert bad_statuses and all(400 <= status < 500 for status in bad_statuses), sorted(set(bad_statuses))
        assert ready and set(ready) == {200}
        assert server("/readyz").status == 200
        metrics = server("/metrics").body.decode()
        assert 'siglip_errors_total{route="/v1/embeddings",type="invalid_image"}' in metrics
        deadline = time.monotonic() + 20  # work of the clients that hung up drains away; nothing stays queued
        while 'siglip_queue_depth{queue="image"} 0' not in server("/metrics").body.decode():
            assert time.monotonic() < deadline, "image items stay queued after their clients left"
            time.sleep(0.1)
        growth = server.rss_bytes() - rss_before
        assert growth < 150 * 1024 * 1024, f"server RSS grew by {growth / 2**20:.0f} MiB over the run"


def test_sigterm_finishes_the_requests_in_flight_and_exits_0(reference_checkpoint, reference):
    model, processor = reference
    args = [str(reference_checkpoint), "--device", "cpu", "--max-batch-size", "64", "--max-wait-ms", "1500"]
    server = ProcessServer("--model", *args)
    with server:
        replies = []
        inflight = threading.Thread(target=lambda: replies.append(server("/v1/embeddings", {"input": "a cat"})))
        inflight.start()
        deadline = time.monotonic() + 20  # the batcher holds the item up to 1.5 s waiting for company
        while 'siglip_queue_depth{queue="text"} 1' not in server("/metrics").body.decode():
            assert time.monotonic() < deadline and inflight.is_alive()
            time.sleep(0.01)
        server.process.send_signal(15)
        inflight.join(timeout=60)
        assert server.process.wait(timeout=60) == 0
    assert replies and replies[0].status == 200
    assert (rows(replies[0])[0] - text_features(model, processor, ["a cat"])[0]).abs().max() <= 1e-6
    stderr = server.process.stderr.read()
    assert f"binding 127.0.0.1:{server.port} (this machine only" in stderr
    with pytest.raises(OSError):
        call(server.url + "/healthz")  # gone: it stopped accepting


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-batch-size", "0"], "--max-batch-size must be >= 1"),
        (["/no/such/collection"], "not a `siglip embed"),
        (["--template", "no placeholder"], "must contain '{}'"),
    ],
)
def test_cli_bad_options_exit_2_with_one_line(reference_checkpoint, args, message):
    command = [sys.executable, "-m", "siglip", "serve", "--model", str(reference_checkpoint), "--device", "cpu", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("siglip: error:") and message in last, result.stderr
    assert "Traceback" not in result.stderr
