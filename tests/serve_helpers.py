"""What the `siglip serve` tests share: a real uvicorn server on 127.0.0.1 (thread or subprocess), an HTTP client
on urllib, image payloads, and the reference embeddings computed with the model directly."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from siglip.encode import load_rgb
from siglip.modeling.model import l2_normalize


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Reply:
    """One HTTP answer: status, headers (lower-case names), raw body, and the body as JSON when it is JSON."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def call(
    url: str, body: Any = None, *, method: str | None = None, headers: dict | None = None, raw: bytes | None = None
):
    """`method url` with a JSON body (or `raw` bytes); returns a `Reply` whatever the status."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    request.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


class ThreadServer:
    """An app served by uvicorn in a daemon thread of this process, on a free 127.0.0.1 port."""

    def __init__(self, app: Any, http: Any = "auto") -> None:
        import uvicorn

        self.app, self.port = app, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", http=http)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)

    def __call__(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return call(self.url + path, body, **kwargs)


class ProcessServer:
    """`python -m siglip serve ARGS` in a subprocess on a free port; waits for /readyz."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "siglip", "serve", *args, "--port", str(self.port), "--log-level", "warning"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
        )

    def __enter__(self) -> ProcessServer:
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"siglip serve exited: {self.process.stderr.read()}")
            try:
                if call(self.url + "/readyz").status == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("siglip serve did not become ready")
            time.sleep(0.1)

    def __exit__(self, *exc: Any) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def __call__(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return call(self.url + path, body, **kwargs)


# ---- payloads -------------------------------------------------------------------------------------------------


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def bomb_png(width: int = 60_000, height: int = 60_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (its data is a few bytes): only a header check
    before decoding refuses it cheaply."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


# ---- the reference numbers --------------------------------------------------------------------------------------


def text_features(model: Any, processor: Any, texts: list[str], normalize: bool = True) -> torch.Tensor:
    """get_text_features(**processor(texts, padding="max_length")): tokenised as the model was trained (padded to
    max_position_embeddings), every processor output passed, as the reference pipeline does."""
    length = model.config.text_config.max_position_embeddings
    inputs = processor(text=texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        features = model.get_text_features(**inputs)
    return l2_normalize(features) if normalize else features


def image_features(model: Any, processor: Any, images: list[bytes], normalize: bool = True) -> torch.Tensor:
    """get_image_features of encoded images read as the library reads them (EXIF applied, RGB)."""
    pixels = processor(images=[load_rgb(data) for data in images], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        features = model.get_image_features(pixel_values=pixels)
    return l2_normalize(features) if normalize else features


def rows(reply: Reply) -> torch.Tensor:
    """The embeddings of an /v1/embeddings reply (float or base64 encoding) as an (N, D) tensor."""
    data = sorted(reply.json["data"], key=lambda item: item["index"])
    decoded = []
    for item in data:
        value = item["embedding"]
        if isinstance(value, str):
            value = torch.frombuffer(bytearray(base64.b64decode(value)), dtype=torch.float32).tolist()
        decoded.append(value)
    return torch.tensor(decoded)
