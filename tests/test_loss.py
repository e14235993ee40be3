"""siglip.loss: parity with transformers' return_loss, blockwise == plain (loss and every gradient), memory bound."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from siglip.errors import InputError
from siglip.loss import sigmoid_loss, sigmoid_loss_from_logits


def make_pairs(batch: int, dim: int, seed: int = 0, dtype: torch.dtype = torch.float32):
    """L2-normalised (image, text) leaves with correlated positives, and scale/bias at non-trivial values."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, dim, generator=generator)
    text = image + 0.8 * torch.randn(batch, dim, generator=generator)
    leaves = [F.normalize(x, dim=-1).to(dtype).requires_grad_() for x in (image, text)]
    scale = torch.tensor([2.1], requires_grad=True)  # exp(2.1) ~ 8.2
    bias = torch.tensor([-3.0], requires_grad=True)
    return (*leaves, scale, bias)


def loss_and_grads(inputs, block_size):
    loss = sigmoid_loss(*inputs, block_size=block_size)
    return (loss, *torch.autograd.grad(loss, inputs))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().double() - b.detach().double()).abs().max().item()


def test_plain_matches_transformers_return_loss():
    transformers = pytest.importorskip("transformers")
    config = transformers.SiglipConfig(
        text_config=dict(
            vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=8,
        ),
    )
    torch.manual_seed(0)
    model = transformers.SiglipModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(2.3)
        model.logit_bias.fill_(-4.0)
    input_ids = torch.randint(0, 64, (6, 7))
    pixel_values = torch.randn(6, 3, 16, 16)
    out = model(input_ids=input_ids, pixel_values=pixel_values, return_loss=True)
    ours = sigmoid_loss(out.image_embeds, out.text_embeds, model.logit_scale, model.logit_bias)
    assert max_diff(ours, out.loss) <= 1e-6
    assert max_diff(sigmoid_loss_from_logits(out.logits_per_text), out.loss) <= 1e-6
    blockwise = sigmoid_loss(out.image_embeds, out.text_embeds, model.logit_scale, model.logit_bias, block_size=4)
    assert max_diff(blockwise, out.loss) <= 1e-5


@pytest.mark.parametrize(
    "batch, block_size",
    [(1, 1), (8, 4), (10, 3), (33, 8), (64, 16), (37, 37), (20, 64)],  # exact, ragged, single tile, block > batch
)
def test_blockwise_matches_plain_loss_and_every_gradient(batch, block_size):
    inputs = make_pairs(batch, 24, seed=batch)
    plain = loss_and_grads(inputs, None)
    blockwise = loss_and_grads(inputs, block_size)
    for name, a, b in zip(("loss", "image", "text", "logit_scale", "logit_bias"), plain, blockwise):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert max_diff(a, b) <= 1e-5, name


def test_scalar_parameters_of_shape_zero_d():
    image, text, scale, bias = make_pairs(9, 8)
    scale0, bias0 = scale.detach().reshape(()).requires_grad_(), bias.detach().reshape(()).requires_grad_()
    plain = loss_and_grads((image, text, scale0, bias0), None)
    blockwise = loss_and_grads((image, text, scale0, bias0), 4)
    assert plain[3].shape == () and blockwise[3].shape == ()
    for a, b in zip(plain, blockwise):
        assert max_diff(a, b) <= 1e-5


def test_bf16_accumulates_in_fp32():
    fp32 = make_pairs(40, 16, seed=3)
    bf16 = make_pairs(40, 16, seed=3, dtype=torch.bfloat16)
    reference = loss_and_grads(fp32, None)
    for block_size in (None, 16):
        loss, grad_image, grad_text, grad_scale, grad_bias = loss_and_grads(bf16, block_size)
        assert loss.dtype == torch.float32 and grad_image.dtype == torch.bfloat16
        assert abs(loss.item() - reference[0].item()) <= 2e-2 * abs(reference[0].item())
        assert max_diff(grad_scale, reference[3]) <= 2e-2 * reference[3].abs().item()
        assert max_diff(grad_bias, reference[4]) <= 2e-2 * reference[4].abs().item()
    # bf16 blockwise agrees with bf16 plain up to bf16 rounding (plain rounds the positives' logits to bf16, the
    # blockwise correction term takes their dot products in fp32)
    plain, blockwise = loss_and_grads(bf16, None), loss_and_grads(bf16, 16)
    assert max_diff(plain[0], blockwise[0]) <= 1e-3 * plain[0].item()
    assert max_diff(plain[1], blockwise[1]) <= 1e-2 * plain[1].abs().max().item()


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an aten op returns (forward and backward alike)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return out


@pytest.mark.parametrize("block_size, expect_square", [(None, True), (16, False)])
def test_blockwise_never_allocates_batch_by_batch(block_size, expect_square):
    batch, dim = 96, 8  # batch * dim = 768, block^2 = 256, batch^2 = 9216
    inputs = make_pairs(batch, dim)
    with LargestTensor() as tracker:
        loss = sigmoid_loss(*inputs, block_size=block_size)
        loss.backward()
    if expect_square:  # the tracker does see the plain loss's B x B logits
        assert tracker.largest >= batch * batch
    else:
        assert tracker.largest <= max(batch * dim, block_size * block_size)
    assert all(x.grad is not None for x in inputs)


def test_no_grad_and_partial_requires_grad():
    image, text, scale, bias = make_pairs(12, 8)
    with torch.no_grad():
        assert max_diff(sigmoid_loss(image, text, scale, bias, 5), sigmoid_loss(image, text, scale, bias)) <= 1e-5
    frozen_image = image.detach()
    plain = torch.autograd.grad(sigmoid_loss(frozen_image, text, scale, bias), [text])
    blockwise = torch.autograd.grad(sigmoid_loss(frozen_image, text, scale, bias, 5), [text])
    assert max_diff(plain[0], blockwise[0]) <= 1e-5


def test_gradcheck_blockwise_in_double():
    image, text, scale, bias = (x.detach().double().requires_grad_() for x in make_pairs(7, 5))
    assert torch.autograd.gradcheck(lambda *xs: sigmoid_loss(*xs, block_size=3), (image, text, scale, bias))


@pytest.mark.parametrize(
    "image, text, scale, bias, block_size, match",
    [
        (torch.zeros(4, 8), torch.zeros(5, 8), torch.zeros(1), torch.zeros(1), None, "same"),
        (torch.zeros(4, 8), torch.zeros(4, 6), torch.zeros(1), torch.zeros(1), None, "same"),
        (torch.zeros(4), torch.zeros(4), torch.zeros(1), torch.zeros(1), None, "2-d"),
        (torch.zeros(4, 8, dtype=torch.long), torch.zeros(4, 8), torch.zeros(1), torch.zeros(1), None, "floating"),
        (torch.zeros(0, 8), torch.zeros(0, 8), torch.zeros(1), torch.zeros(1), None, "empty"),
        (torch.zeros(4, 8), torch.zeros(4, 8, dtype=torch.float64), torch.zeros(1), torch.zeros(1), None, "dtype"),
        (torch.zeros(4, 8), torch.zeros(4, 8), torch.zeros(2), torch.zeros(1), None, "logit_scale"),
        (torch.zeros(4, 8), torch.zeros(4, 8), torch.zeros(1), 0.5, None, "logit_bias"),
        (torch.zeros(4, 8), torch.zeros(4, 8), torch.zeros(1), torch.zeros(1), 0, "block_size"),
        (torch.zeros(4, 8), torch.zeros(4, 8), torch.zeros(1), torch.zeros(1), 2.0, "block_size"),
    ],
)
def test_bad_inputs_raise_input_error(image, text, scale, bias, block_size, match):
    with pytest.raises(InputError, match=match):
        sigmoid_loss(image, text, scale, bias, block_size=block_size)


def test_from_logits_rejects_non_square():
    with pytest.raises(InputError, match="square"):
        sigmoid_loss_from_logits(torch.zeros(3, 4))
