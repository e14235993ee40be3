"""Error-feedback rounding of int8 weights (GPTQ, Frantar et al. 2022), for CPUs that take 7-bit weights.

Rounding each weight to its nearest step leaves errors that add up in every output. Rounding the input columns of
a linear one at a time instead, and moving each column's rounding error onto the columns not yet rounded (weighted
by how the calibration inputs correlate, their Gram matrix H = sum x x^T), lets later columns cancel it: the
output error on inputs like the calibration ones drops several-fold for the same integers and scales. On CPUs
without VNNI the int8 GEMM needs weights in -63..63 (kernels/cpu.py), twice the plain rounding error of 8 bits;
there this rounding keeps the linears int8 that plain rounding would send back to float (docs/int8.md). It costs
one Cholesky factorisation per input and a pass over the columns at quantisation time; nothing at inference.
Static int8 fits it to the calibration inputs; dynamic int8 to a few synthetic ones, damped harder and checked
on other synthetic inputs (quantization/convert.py).
"""

from __future__ import annotations

import torch

BLOCK = 128  # columns rounded together before their errors reach the rest (one GEMM per block)
DAMPING = 0.01  # of H's mean diagonal, added to it: keeps H invertible with few rows and smooths the feedback


@torch.no_grad()
def error_feedback_round(
    weight: torch.Tensor, gram: torch.Tensor, limit: int, damping: float = DAMPING
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float weight -> (int8 weight in -limit..limit, fp32 per-output-channel scale): the scales of
    plain symmetric rounding (max |w| per channel / limit), the integers chosen with error feedback over `gram`
    (`damping`: the share of its mean diagonal added to it)."""
    weight = weight.detach().float().clone()
    columns = weight.shape[1]
    hessian = gram.detach().float().clone()
    unused = torch.diagonal(hessian) == 0  # input channels that were always 0: nothing to feed back through
    hessian[unused, unused] = 1.0
    weight[:, unused] = 0.0
    hessian.diagonal().add_(damping * float(torch.diagonal(hessian).mean()))
    scale = weight.abs().amax(dim=1).clamp_min(1e-12) / limit
    # the upper Cholesky factor of H^-1: row i holds how column i's error spreads to the columns after it
    inverse = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian)), upper=True)
    integers = torch.empty_like(weight)
    for start in range(0, columns, BLOCK):
        end = min(start + BLOCK, columns)
        block, local = weight[:, start:end].clone(), inverse[start:end, start:end]
        errors = torch.empty_like(block)
        for i in range(end - start):
            rounded = torch.clamp(torch.round(block[:, i] / scale), -limit, limit)
            integers[:, start + i] = rounded
            errors[:, i] = (block[:, i] - rounded * scale) / local[i, i]
            block[:, i:] -= errors[:, i : i + 1] * local[i, i:]
        weight[:, end:] -= errors @ inverse[start:end, end:]
    return integers.to(torch.int8), scale
