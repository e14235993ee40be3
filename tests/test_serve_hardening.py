"""`siglip serve` against hostile and careless clients (issue 30, server half): one bad item fails only its own
request, no client input gets a 5xx, classify's default template is the pipeline's, header and keep-alive
timeouts, option and API-key checks. Real uvicorn servers on 127.0.0.1, bounded counts and times."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import FIXTURES
from PIL import Image
from serve_helpers import ProcessServer, ThreadServer, call, data_uri, encoded, image_features, rows, text_features

import siglip
from siglip.auto import AutoModel, AutoProcessor
from siglip.bulk import embed_source
from siglip.errors import InputError
from siglip.prompt_template import check_template
from siglip.serve import Limits, create_app
from siglip.serve.batcher import DynamicBatcher
from siglip.serve.server import protocol_class

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "models" / "siglip-demo-shapes"
EXAMPLES = ROOT / "examples" / "images"
BAD_TEMPLATES = ["{x} {}", "{0} {1}", "{} {", "{!z}{}", "{} {}", "no placeholder", "{:d}", "}{}"]


@pytest.fixture(scope="module")
def reference(reference_checkpoint):
    return AutoModel.from_pretrained(reference_checkpoint).eval(), AutoProcessor.from_pretrained(reference_checkpoint)


@pytest.fixture(scope="module")
def server(reference_checkpoint, tmp_path_factory):
    source = tmp_path_factory.mktemp("hardening_photos")
    for name in ("chelsea.png", "coffee.png"):
        shutil.copy(FIXTURES / name, source / name)
    collection = tmp_path_factory.mktemp("hardening_collection") / "photos"
    assert embed_source(source, collection, model=str(reference_checkpoint), batch_size=2).ok == 2
    app = create_app(str(reference_checkpoint), [collection], max_batch_size=32, max_wait_ms=40, device="cpu")
    with ThreadServer(app, http=protocol_class("auto", 10.0)) as running:  # the HTTP protocol of `siglip serve`
        yield running


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    return [
        encoded(Image.open(FIXTURES / name).convert("RGB").resize((48, 40))) for name in ("chelsea.png", "coffee.png")
    ]


# ---- 1. per-request isolation -------------------------------------------------------------------------------


def test_the_batcher_splits_a_failing_batch_so_only_the_culprit_fails():
    calls: list[list[str]] = []

    def run_batch(items: list[str]) -> list[str]:
        calls.append(list(items))
        if any(item.startswith("bad") for item in items):
            raise ValueError("a bad item in this batch")
        return [item.upper() for item in items]

    async def main() -> list:
        executor = ThreadPoolExecutor(1)
        batcher = DynamicBatcher("text", run_batch, executor, max_batch_size=16, max_wait_ms=50)
        batcher.start()
        requests = [["a", "b"], ["bad1"], ["c"], ["d", "bad2", "e"], ["f"]]
        results = await asyncio.gather(*(batcher.run(items) for items in requests), return_exceptions=True)
        await batcher.stop()
        executor.shutdown()
        return results

    results = asyncio.run(main())
    assert results[0] == ["A", "B"] and results[2] == ["C"] and results[4] == ["F"]
    assert isinstance(results[1], ValueError) and isinstance(results[3], ValueError)
    assert calls[0] == ["a", "b", "bad1", "c", "d", "bad2", "e", "f"]  # one batch first, then its halves
    assert len(calls) <= 2 * 8  # bisection: bounded retries


def test_bad_items_fail_only_their_own_requests_under_concurrency(server, reference, photos):
    model, processor = reference
    texts = [f"good text number {i}" for i in range(12)]
    want_texts = text_features(model, processor, texts)
    want_images = image_features(model, processor, photos)
    bad_bodies = [
        ("/v1/embeddings", {"input": ["fine", "\ud800"]}, "input[1]"),
        ("/v1/embeddings", {"input": [{"text": "x\udfff"}]}, "input[0]"),
        ("/v1/classify", {"image": data_uri(photos[0]), "candidate_labels": ["cat", "\ud83d"]}, "candidate_labels[1]"),
        ("/v1/search", {"query": "\ud800 lonely"}, "query"),
        ("/v1/embeddings", {"input": [{"image": "data:image/png;base64"}]}, "input[0]"),
    ]
    failures: list[str] = []
    requests = [("/v1/embeddings", {"input": [text]}) for text in texts]
    requests += [("/v1/embeddings", {"input": [{"image": data_uri(photo)}]}) for photo in photos]
    requests += [(path, body) for path, body, _ in bad_bodies]
    for round_ in range(3):
        replies = _release_together(server.url, requests)
        results = {f"text{i}": replies[i] for i in range(len(texts))}
        results.update({f"image{i}": replies[len(texts) + i] for i in range(2)})
        results.update({f"bad{i}": replies[len(texts) + 2 + i] for i in range(len(bad_bodies))})
        for i in range(len(texts)):
            reply = results[f"text{i}"]
            if reply.status != 200:
                failures.append(f"round {round_} text {i}: {reply.status} {reply.body[:120]!r}")
            elif (rows(reply)[0] - want_texts[i]).abs().max() > 1e-5:
                failures.append(f"round {round_} text {i}: wrong embedding")
        for i in range(2):
            reply = results[f"image{i}"]
            if reply.status != 200 or (rows(reply)[0] - want_images[i]).abs().max() > 1e-5:
                failures.append(f"round {round_} image {i}: {reply.status}")
        for i, (_, _, param) in enumerate(bad_bodies):
            reply = results[f"bad{i}"]
            assert reply.status == 400 and reply.json["error"]["param"] == param, reply.body
    assert not failures, failures


def _release_together(url: str, requests: list[tuple[str, dict]]) -> list:
    """Send every request from its own thread, all released at once by a barrier; the replies in order."""
    barrier = threading.Barrier(len(requests))
    replies: list = [None] * len(requests)

    def send(index: int) -> None:
        path, body = requests[index]
        barrier.wait()
        replies[index] = call(url + path, body)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return replies


# ---- 2. no 5xx for any client input ---------------------------------------------------------------------------


@pytest.mark.parametrize("template", BAD_TEMPLATES)
def test_malformed_templates_are_400_naming_the_field(server, photos, template):
    reply = server(
        "/v1/classify", {"image": data_uri(photos[0]), "candidate_labels": ["a"], "hypothesis_template": template}
    )
    assert reply.status == 400, reply.body
    assert reply.json["error"]["param"] == "hypothesis_template"


@pytest.mark.parametrize("template", BAD_TEMPLATES)
def test_one_template_check_for_server_cli_and_pipeline(template, reference_checkpoint):
    with pytest.raises(InputError, match="hypothesis_template"):
        check_template(template)
    pipe = siglip.pipeline(model=str(reference_checkpoint))
    with pytest.raises(InputError):
        pipe(Image.new("RGB", (8, 8)), candidate_labels=["a"], hypothesis_template=template)
    for good in ("{}", "a photo of {}.", "{0}", "{{literal}} {}"):
        assert check_template(good) == good


def _raw(port: int, payload: bytes, timeout: float = 20) -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def _post(path: str, body: bytes, content_type: str | None = "application/json") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    return head.encode() + b"\r\n" + body


def test_hostile_bodies_get_4xx_json_naming_the_field(server, photos, monkeypatch):
    deep = b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    cases = [
        (_post("/v1/embeddings", deep), 400, None),
        (_post("/v1/embeddings", b'{"input": ' + b"[" * 200 + b'"a"' + b"]" * 200 + b"}"), 400, None),
        (_post("/v1/embeddings", b'{"input": "a"}', "text/html"), 415, "content-type"),
        (_post("/v1/embeddings", b'{"input": "a"}', "multipart/form-data; boundary=x"), 415, "content-type"),
        (_post("/v1/embeddings", b'{"input": "a"}', "application/json; charset=ebcdic"), 415, "content-type"),
        (_post("/v1/embeddings", b'{"input": "\xff\xfe caf\xe9"}'), 400, None),
        (_post("/v1/embeddings", '{"input": "a"}'.encode("utf-16")), 400, None),
        (_post("/v1/embeddings", b'{"input": [{"image": "data:image/png;base64"}]}'), 400, "input[0]"),
        (_post("/v1/embeddings", b'{"input": [{"image": "data:,"}]}'), 400, "input[0]"),
        (_post("/v1/embeddings", b'{"input": "a", "dimensions": 1e400}'), 400, "dimensions"),
        (_post("/v1/search", b'{"query": "a", "k": 100000000000000000000000000000}'), 400, "k"),
        (_post("/v1/classify", b'{"image": "x", "candidate_labels": "a", "top_k": -1}'), 400, "top_k"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n", 400, None),  # refused by the parser: JSON
    ]
    for payload, status, param in cases:
        got, body = _raw(server.port, payload)
        assert got == status, (payload[:150], body)
        assert body["error"].get("param") == param, (payload[:150], body)
    # a JSON body without a content type (curl -d sends form-urlencoded) is still read as JSON
    for content_type in (None, "application/x-www-form-urlencoded", "text/plain", "application/json; charset=UTF-8"):
        got, body = _raw(server.port, _post("/v1/embeddings", b'{"input": "a"}', content_type))
        assert got == 200, (content_type, body)
    for huge in ("/v1/items/99999999999999999999999999/thumbnail", "/v1/items/-1/thumbnail?size=1e9"):
        assert server(huge).status in (400, 404)


def test_an_untyped_decoder_failure_is_a_400_for_that_item_only(server, photos, monkeypatch):
    import struct

    from siglip.serve import engine

    real = engine.load_rgb

    def exploding(data, **kwargs):
        if data == photos[1]:
            raise struct.error("unpack requires a buffer of 4 bytes")  # as a corrupt EXIF block raised it
        return real(data, **kwargs)

    monkeypatch.setattr(engine, "load_rgb", exploding)
    reply = server("/v1/embeddings", {"input": [{"image": data_uri(photos[0])}, {"image": data_uri(photos[1])}]})
    assert reply.status == 400 and reply.json["error"]["param"] == "input[1]", reply.body
    assert reply.json["error"]["type"] == "invalid_image"
    assert server("/v1/embeddings", {"input": [{"image": data_uri(photos[0])}]}).status == 200


def test_openapi_is_generated_from_the_request_models(server):
    spec = server("/openapi.json").json
    assert spec["openapi"].startswith("3.")
    for path in ("/v1/embeddings", "/v1/classify", "/v1/search"):
        schema = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert schema["$ref"].startswith("#/components/schemas/")
    classify = spec["components"]["schemas"]["ClassifyRequest"]
    assert "candidate_labels" in classify["properties"] and "candidate_labels" in classify["required"]


def test_schema_fuzz_no_5xx_and_responses_match_the_schema(server):
    """schemathesis over every operation of /openapi.json: small seeded counts here, `make fuzz` runs more."""
    pytest.importorskip("schemathesis")
    from fuzz_api import fuzz

    report = fuzz(server.url, max_examples=12, seed=30, time_budget_s=60)
    assert report.calls >= 30, report
    assert not report.failures, report.failures[:5]


# ---- 3. classify = pipeline -------------------------------------------------------------------------------------


def test_classify_without_template_uses_the_models_template_everywhere():
    labels = ["red square", "blue circle", "green star", "yellow heart"]
    image = EXAMPLES / "blue_circle.png"
    expected = siglip.pipeline(model=str(DEMO_MODEL))(str(image), candidate_labels=labels)
    assert expected[0]["label"] == "blue circle"
    app = create_app(str(DEMO_MODEL), device="cpu")
    with ThreadServer(app) as demo:
        reply = demo("/v1/classify", {"image": data_uri(image.read_bytes()), "candidate_labels": labels})
        assert reply.status == 200, reply.body
        assert reply.json["hypothesis_template"] == "a {}"
        got = reply.json["results"][0]
        assert [r["label"] for r in got] == [r["label"] for r in expected]
        assert max(abs(g["score"] - w["score"]) for g, w in zip(got, expected)) <= 1e-6
        # the page reads the template from /readyz (shown by tests/test_serve_browser.py); /v1/models has it too
        assert demo("/readyz").json["hypothesis_template"] == "a {}"
        assert demo("/v1/models").json["data"][0]["hypothesis_template"] == "a {}"
    command = [sys.executable, "-m", "siglip", "classify", str(image), "--labels", *labels, "--json"]
    result = subprocess.run([*command, "--model", str(DEMO_MODEL), "--device", "cpu"], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    cli = json.loads(result.stdout.splitlines()[0])["results"]
    assert [r["label"] for r in cli] == [r["label"] for r in expected]
    assert max(abs(c["score"] - w["score"]) for c, w in zip(cli, expected)) <= 1e-5


# ---- 4. server limits -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_slowloris_and_idle_sockets_are_closed_within_bounded_time(reference_checkpoint, http):
    pytest.importorskip(http)
    args = ["--model", str(reference_checkpoint), "--http", http]
    args += "--device cpu --header-timeout 2 --keep-alive-timeout 1".split()
    with ProcessServer(*args) as running:
        sockets = []
        for i in range(12):
            sock = socket.create_connection(("127.0.0.1", running.port), timeout=5)
            if i % 3 == 0:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # a kept-alive connection, then idle
                sock.recv(4096)
            elif i % 3 == 1:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            sockets.append(sock)  # i % 3 == 2: connected, silent
        started = time.monotonic()
        open_ = set(range(len(sockets)))
        while open_ and time.monotonic() - started < 8:
            for i in list(open_):
                try:
                    sockets[i].sendall(b"X-Drip: 1\r\n") if i % 3 == 1 else None  # a byte now and then
                    sockets[i].settimeout(0.05)
                    if sockets[i].recv(4096) == b"":
                        open_.discard(i)
                except TimeoutError:
                    pass
                except OSError:
                    open_.discard(i)
            time.sleep(0.2)
        assert not open_, f"{len(open_)} of {len(sockets)} sockets still open after {time.monotonic() - started:.1f}s"
        assert running("/healthz").status == 200
        for sock in sockets:
            sock.close()


def _siglip(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "siglip", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--port", "-1"], "--port"),
        (["--port", "70000"], "--port"),
        (["--request-timeout", "-1"], "--request-timeout"),
        (["--request-timeout", "inf"], "--request-timeout"),
        (["--max-wait-ms", "nan"], "--max-wait-ms"),
        (["--stall-timeout", "0"], "--stall-timeout"),
        (["--header-timeout", "nan"], "--header-timeout"),
        (["--max-queue", "-3"], "--max-queue"),
        (["--host", "no such host.invalid"], "--host"),
        (["--api-key", "k3y "], "--api-key"),
    ],
)
def test_serve_options_are_range_checked(args, message):
    result = _siglip("serve", "--model", "/nonexistent/model/folder", *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("siglip: error:") and message in lines[-1], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "options, name",
    [
        ({"max_wait_ms": math.nan}, "max_wait_ms"),
        ({"request_timeout_s": -1}, "request_timeout_s"),
        ({"stall_timeout_s": math.inf}, "stall_timeout_s"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_queue": True}, "max_queue"),
        ({"decode_workers": 0}, "decode_workers"),
        ({"limits": Limits(max_items=-1)}, "max_items"),
        ({"limits": Limits(url_timeout_s=math.nan)}, "url_timeout_s"),
        ({"hypothesis_template": "{} {}"}, "hypothesis_template"),
    ],
)
def test_create_app_checks_its_options_before_loading(options, name):
    with pytest.raises(InputError, match=name):
        create_app("/nonexistent/model/folder", **options)


def test_a_busy_port_is_one_error_line_and_exit_2():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = _siglip("serve", "--model", "/nonexistent/model/folder", "--port", str(busy.getsockname()[1]))
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("siglip: error:") and "in use" in errors[0], result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        ("train --output-dir /tmp/x --data synthetic --config c.json --tokenizer t --lr nan".split(), "--lr"),
        (["classify", "x.png", "--labels", "a", "--template", "{} {}"], "hypothesis_template"),
        (["classify", "x.png", "--labels", "a", "--template", "{x}"], "hypothesis_template"),
    ],
)
def test_other_commands_refuse_bad_numbers_and_templates(args, message):
    result = _siglip(*args)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("siglip: error:") and message in last, result.stderr


def test_api_keys_are_compared_exactly(reference_checkpoint):
    for bad in ("k3y\n", " k3y", "k3y ", "", "k\u00e9y"):
        with pytest.raises(InputError, match="api_key"):
            create_app(str(reference_checkpoint), api_key=bad, device="cpu")
    app = create_app(str(reference_checkpoint), api_key="k3y", device="cpu")
    with ThreadServer(app, http=protocol_class("auto", 10.0)) as secured:  # the protocol `siglip serve` runs
        for raw, status in [
            (b"Bearer k3y", 200),
            (b"Bearer k3y ", 401),
            (b"Bearer k3y\t", 401),
            (b"Bearer k3y\x0b", 400),
        ]:
            request = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: " + raw + b"\r\n\r\n"
            got, body = _raw(secured.port, request)
            assert got == status, (raw, body)  # the parser refuses a vertical tab: a JSON 400, not plain text
            assert body.get("error", {}).get("type", "") in ("", "unauthorized", "invalid_http"), body
        two = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k3y\r\nAuthorization: Bearer k3y\r\n\r\n"
        assert _raw(secured.port, two)[0] == 401
        body = {"input": "a"}
        assert secured("/v1/embeddings", body, headers={"Authorization": "Bearer k3y"}).status == 200
        for wrong in ("Bearer  k3y", "Bearer k3y\xa0", "Bearer k3y x", "bearer k3y",
                      "Bearer K3Y", "Bearer k3"):  # fmt: skip
            reply = secured("/v1/embeddings", body, headers={"Authorization": wrong})
            assert reply.status == 401 and reply.json["error"]["type"] == "unauthorized", wrong


# ---- 5. URL policy -----------------------------------------------------------------------------------------------


def test_the_url_policy_refuses_every_non_global_address():
    from siglip.serve.security import is_private_address

    for address in ("100.64.0.1", "100.100.100.200", "100.127.255.254", "192.0.0.8", "198.18.0.1", "240.0.0.1",
                    "255.255.255.255", "::ffff:100.64.0.1", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1",
                    "2001:0:4136:e378:8000:63bf:3fff:fdd2", "100::1", "2001:db8::1", "fc00::1", "::"):  # fmt: skip
        assert is_private_address(address), address
    for address in ("8.8.8.8", "1.1.1.1", "100.128.0.1", "2606:4700:4700::1111", "64:ff9b::808:808"):
        assert not is_private_address(address), address


@pytest.mark.parametrize("timeout", [math.nan, math.inf, -1.0, 0.0, "10", None, True])
def test_fetch_url_timeout_must_be_finite_positive(timeout):
    from siglip.errors import FetchError
    from siglip.fetch import fetch_url

    with pytest.raises(FetchError, match="timeout"):
        fetch_url("http://example.invalid/x.png", timeout=timeout)


def test_the_fetch_deadline_covers_dns(monkeypatch):
    from siglip import fetch
    from siglip.errors import FetchError

    def slow_lookup(*args, **kwargs):
        time.sleep(3)
        raise socket.gaierror("too late")

    monkeypatch.setattr(fetch.socket, "getaddrinfo", slow_lookup)
    started = time.monotonic()
    with pytest.raises(FetchError, match="timeout|deadline|did not finish"):
        fetch.fetch_url("http://slow-dns.example/x.png", timeout=0.5)
    assert time.monotonic() - started < 2.0


def test_formats_outside_the_default_set_are_refused_before_any_parser_runs(server, photos, monkeypatch):
    """An ICO or PSD data URI is a 400 that says how to allow the format; the header check opens only the
    formats the decoder accepts (another format's parser is never reached)."""
    import io

    from PIL import Image

    opened = []
    real_open = Image.open

    def spying_open(fp, mode="r", formats=None):
        opened.append(formats)
        return real_open(fp, mode, formats)

    monkeypatch.setattr(Image, "open", spying_open)
    icon = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(icon, format="ICO")
    reply = server("/v1/embeddings", {"input": [{"image": data_uri(icon.getvalue())}]})
    assert reply.status == 400 and reply.json["error"]["param"] == "input[0]", reply.body
    assert "allowed_formats" in reply.json["error"]["message"] or "allow-format" in reply.json["error"]["message"]
    assert opened and all(formats is not None and "ICO" not in formats for formats in opened)
    assert server("/v1/embeddings", {"input": [{"image": data_uri(photos[0])}]}).status == 200
