"""A tokenizer used before a fork (DataLoader workers) still works in the child: no inherited dead thread pool."""

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
    pid = os.fork()
    if pid == 0:  # child: exit 0 only if the same batch encodes identically
        try:
            os._exit(0 if tokenizer(texts)["input_ids"] == expected else 1)
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
    pytest.fail("the tokenizer hung in a forked child (thread pool inherited from the parent)")
