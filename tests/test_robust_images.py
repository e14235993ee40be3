"""Hostile image input: every decoder failure is an ImageError naming the file (fuzzed), a memory cap read from the
header, EPS without Ghostscript, and URL downloads with a total deadline and http(s)-only redirects."""

from __future__ import annotations

import http.server
import io
import json
import random
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
from conftest import FIXTURES
from PIL import EpsImagePlugin, Image

import siglip
from siglip.errors import FetchError, ImageError
from siglip.fetch import fetch_url
from siglip.image import loading
from siglip.image.loading import load_image

CORRUPT = sorted((FIXTURES / "corrupt").iterdir())
DEMO_MODEL = Path(__file__).parent.parent / "models" / "siglip-demo-shapes"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "siglip", *args], capture_output=True, text=True, timeout=300)


# ---- decoder errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CORRUPT, ids=lambda p: p.name)
def test_corrupt_files_raise_image_error_naming_them(path):
    """Pillow raises TypeError / struct.error / KeyError on these; each must surface as an ImageError."""
    with pytest.raises(ImageError, match="corrupt or truncated") as info:
        load_image(path)
    assert path.name in str(info.value)
    with pytest.raises(ImageError, match=path.name):  # the processors load paths the same way
        siglip.SiglipImageProcessor()(str(path))
    try:
        opened = Image.open(path)  # the caller's own call: may raise Pillow's errors, ours may not
    except Exception:  # noqa: BLE001
        return
    try:  # a lazily opened PIL image handed to a processor decodes there: an image or an ImageError
        siglip.Siglip2ImageProcessor()(opened)
    except ImageError as error:
        assert path.name in str(error)


def _mutants(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    """Byte flips, overwritten runs, truncations and duplicated runs of `data`: the kinds of damage real files get."""
    out = []
    for _ in range(count):
        mutant = bytearray(data)
        kind = rng.randrange(4)
        if kind == 0:
            for _ in range(rng.randint(1, 8)):
                mutant[rng.randrange(len(mutant))] = rng.randrange(256)
        elif kind == 1:
            start = rng.randrange(len(mutant))
            mutant[start : start + rng.randint(1, 16)] = bytes(rng.randrange(256) for _ in range(16))
        elif kind == 2:
            mutant = mutant[: rng.randrange(1, len(mutant))]
        else:
            start = rng.randrange(len(mutant))
            mutant[start:start] = mutant[start : start + rng.randint(1, 64)]
        out.append(bytes(mutant))
    return out


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fuzzed_fixtures_give_only_images_or_image_errors():
    """A bounded fuzz (fixed seed, ~2,000 decodes of mutated small fixtures of five formats): nothing but success
    or ImageError, whatever the decoder raised."""
    rng = random.Random(16)
    sources = [
        FIXTURES / "multipage.tif",
        FIXTURES / "multipage_rgb.tif",
        FIXTURES / "no_time_for_that_tiny.gif",
        FIXTURES / "horse.png",
        *CORRUPT,
    ]
    seeds = [path.read_bytes() for path in sources] + [
        _encoded(Image.open(FIXTURES / "rocket.jpg").resize((64, 43)), "JPEG")
    ]
    outcomes = {"ok": 0, "ImageError": 0}
    for data in seeds:
        for mutant in _mutants(data, rng, 250):
            try:
                load_image(mutant)
                outcomes["ok"] += 1
            except ImageError as error:
                assert "bytes>" in str(error)  # names the source
                outcomes["ImageError"] += 1
    assert outcomes["ImageError"] > 50 and sum(outcomes.values()) == 250 * len(seeds)


def _encoded(image: Image.Image, format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format)
    return buffer.getvalue()


def test_eps_without_ghostscript_says_so(tmp_path, monkeypatch):
    path = tmp_path / "drawing.eps"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path, "EPS")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", False)  # as on a machine without `gs`
    with pytest.raises(ImageError, match="Ghostscript") as info:
        load_image(path, allowed_formats=["EPS"])  # EPS is refused by default (tests/test_hardening_images.py)
    assert "drawing.eps" in str(info.value) and "corrupt" not in str(info.value)


def test_skip_errors_cli_skips_corrupt_files():
    args = ["classify", str(FIXTURES / "horse.png"), *map(str, CORRUPT), "--labels", "a circle,a square"]
    result = run_cli(*args, "--model", str(DEMO_MODEL), "--skip-errors")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for path in CORRUPT:
        assert path.name in result.stderr
    assert "horse.png" in result.stdout


# ---- memory cap -----------------------------------------------------------------------------------------------


def _tall_png(path: Path, height: int = 89_000_000) -> Path:
    """A 1 x `height` RGB PNG of a few dozen bytes (its IDAT holds almost nothing): a decompression bomb that
    stays under Pillow's pixel limit (89,478,485) while its decoded frame would take ~356 MB."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 1, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    return path


def test_memory_cap_refuses_a_tiny_tall_png_everywhere(tmp_path):
    bomb = _tall_png(tmp_path / "tall.png")
    assert bomb.stat().st_size < 80
    assert 1 * 89_000_000 < Image.MAX_IMAGE_PIXELS
    for call in (
        lambda: load_image(bomb),
        lambda: siglip.SiglipImageProcessor()(str(bomb)),
        lambda: siglip.Siglip2ImageProcessor()(str(bomb)),
        lambda: siglip.Siglip2ImageProcessor()(Image.open(bomb)),
    ):
        with pytest.raises(ImageError, match="MiB to decode") as info:
            call()
        assert "tall.png" in str(info.value)
    pipe = siglip.pipeline(model=str(DEMO_MODEL))
    with pytest.raises(ImageError, match="MiB to decode"):
        pipe(str(bomb), candidate_labels=["a circle"])
    result = run_cli("classify", str(bomb), "--labels", "a circle", "--model", str(DEMO_MODEL))
    assert result.returncode == 2 and "MiB to decode" in result.stderr and "Traceback" not in result.stderr


def test_memory_cap_is_configurable(monkeypatch):
    path = FIXTURES / "chelsea.png"  # 451 x 300 RGB: 0.5 MiB decoded
    assert loading.decoded_bytes((451, 300), "RGB") == 451 * 300 * 4
    assert loading.decoded_bytes((451, 300), "L") == 451 * 300 * 5  # grey frame + its RGB copy
    with pytest.raises(ImageError, match="max_decoded_bytes"):
        load_image(path, max_decoded_bytes=100_000)
    monkeypatch.setattr(loading, "MAX_DECODED_BYTES", 100_000)
    with pytest.raises(ImageError, match="max_decoded_bytes"):
        siglip.SiglipImageProcessor()(str(path))
    assert load_image(path, max_decoded_bytes=10**6).size == (451, 300)
    # fast decoding of a JPEG is capped by its reduced size (rocket.jpg: 640x427 -> 1/4 scale 160x107)
    assert load_image(FIXTURES / "rocket.jpg", draft_size=(100, 100)).size == (160, 107)
    code = "import siglip.image.loading as l; print(l.MAX_DECODED_BYTES)"
    env_run = subprocess.run(
        [sys.executable, "-c", code],
        env={"SIGLIP_MAX_DECODED_BYTES": "12345", "PATH": ""},
        capture_output=True,
        text=True,
    )
    assert env_run.stdout.strip() == "12345", env_run.stderr


# ---- URLs ------------------------------------------------------------------------------------------------------

PNG = (FIXTURES / "horse.png").read_bytes()
TINY_PNG = _encoded(Image.new("RGB", (2, 2), (200, 10, 10)), "PNG")


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes: /img.png, /redirect-ftp (302 to an ftp:// URL), /redirect-local (302 to /img.png),
    /drip (a valid PNG, one byte every 50 ms), /missing (404)."""

    ftp_port = 0

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path == "/img.png":
            self._send(PNG)
        elif self.path == "/redirect-ftp":
            self._redirect(f"ftp://127.0.0.1:{self.ftp_port}/img.png")
        elif self.path == "/redirect-local":
            self._redirect("/img.png")
        elif self.path == "/drip":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(TINY_PNG)))
            self.end_headers()
            try:
                for byte in TINY_PNG:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:  # the client hung up: what a deadline does
                pass
        else:
            self.send_error(404)

    def _send(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def server():
    """A real HTTP server on 127.0.0.1 and a listening socket standing for the ftp target (counts connections)."""
    ftp = socket.socket()
    ftp.bind(("127.0.0.1", 0))
    ftp.listen(4)
    ftp.settimeout(0.2)
    _Handler.ftp_port = ftp.getsockname()[1]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", ftp
    httpd.shutdown()
    httpd.server_close()
    ftp.close()


def _accepted(listener: socket.socket) -> bool:
    try:
        connection, _ = listener.accept()
    except TimeoutError:
        return False
    connection.close()
    return True


def test_url_loads_and_follows_http_redirects(server):
    base, _ = server
    assert load_image(f"{base}/img.png").mode == "RGBA"
    fetched = fetch_url(f"{base}/redirect-local", timeout=5, max_bytes=10**6)
    assert fetched.url.endswith("/img.png") and fetched.data == PNG
    with pytest.raises(ImageError, match="max_bytes"):
        load_image(f"{base}/img.png", max_bytes=100)
    with pytest.raises(ImageError, match="HTTP 404") as info:
        load_image(f"{base}/missing")
    assert "/missing" in str(info.value)


def test_redirect_to_another_scheme_is_refused_without_connecting(server):
    base, ftp = server
    with pytest.raises(ImageError, match="only http and https redirects"):
        load_image(f"{base}/redirect-ftp")
    assert not _accepted(ftp)


def test_timeout_is_a_deadline_for_the_whole_download(server):
    """The server sends a valid PNG one byte at a time, each within the timeout, for several times the timeout:
    a per-read timeout would let it finish (and decode); a deadline cuts it."""
    base, _ = server
    assert len(TINY_PNG) * 0.05 > 3  # the drip lasts > 3 s
    with pytest.raises(ImageError, match="timeout=1.0s"):
        load_image(f"{base}/drip", timeout=1.0)


def test_hooks_check_every_hop(server):
    base, _ = server
    seen = []

    def check(host, address):
        seen.append((host, str(address)))

    fetch_url(f"{base}/redirect-local", check_address=check)
    assert seen == [("127.0.0.1", "127.0.0.1")] * 2  # the first URL and the redirect target

    def refuse_loopback(host, address):
        if address.is_loopback:
            raise FetchError(f"{host} is a loopback address")

    with pytest.raises(FetchError, match="loopback"):
        fetch_url(f"{base}/img.png", check_address=refuse_loopback)
    with pytest.raises(FetchError, match="not allowed"):
        fetch_url(f"{base}/redirect-local", allow_redirect_to=lambda url: False)
    with pytest.raises(FetchError, match="only http and https"):
        fetch_url("file:///etc/passwd")


def test_json_of_cli_skip_records_is_valid():
    """--skip-errors --json reports the skipped corrupt files as error records, not a traceback."""
    result = run_cli(
        "classify", *map(str, CORRUPT), "--labels", "a circle", "--model", str(DEMO_MODEL), "--skip-errors", "--json"
    )
    assert "Traceback" not in result.stderr
    text = result.stdout.strip()
    records = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines()]
    assert len(records) == len(CORRUPT) and all("error" in record for record in records)
