"""Tokenizers and image processors used before a fork (DataLoader workers) still work in the child."""

import os
import sys
import time

import pytest
from spm_model import train_sentencepiece_model

import siglip


@pytest.mark.skipif(sys.platform == "win32", reason="needs os.fork")
def test_batched_encode_works_in_a_forked_child(tmp_path):
    tokenizer = siglip.SiglipTokenizer(vocab_file=str(train_sentencepiece_model(tmp_path)))
    texts = [f"a photo of thing number {i}" for i in range(5000)]  # large enough for the threaded path
    expected = tokenizer(texts)["input_ids"]
    _assert_child_succeeds(lambda: tokenizer(texts)["input_ids"] == expected)


@pytest.mark.skipif(sys.platform == "win32", reason="needs os.fork")
def test_threaded_image_preprocessing_works_in_a_forked_child():
    from PIL import Image

    processor = siglip.SiglipImageProcessor()
    images = [Image.new("RGB", (64 + i, 48), (i, 2 * i, 3 * i)) for i in range(8)]
    expected = processor(images, return_tensors="np")["pixel_values"]
    _assert_child_succeeds(lambda: (processor(images, return_tensors="np")["pixel_values"] == expected).all())


def _assert_child_succeeds(check) -> None:
    """Fork; the child exits 0 only if `check()` is true. Fails if it exits otherwise or hangs (60 s)."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if check() else 1)
        finally:
            os._exit(2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("hung in a forked child (a thread pool inherited from the parent)")
