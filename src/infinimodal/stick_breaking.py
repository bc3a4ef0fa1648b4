"""The stick-breaking (GEM) construction, computed in log space.

With truncation K there are K - 1 sticks v_1..v_{K-1} in (0, 1) and K weights

    pi_k = v_k * prod_{j<k} (1 - v_j),      pi_K = prod_{j<K} (1 - v_j),

so pi lies on the K-simplex (Sethuraman 1994; Nalisnick & Smyth 2017, "Stick-Breaking Variational
Autoencoders"). Products of many numbers below one underflow, so everything here works with
log v and log(1 - v) and a cumulative sum.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def stick_bounds(dtype: torch.dtype) -> tuple[float, float]:
    """The interval sticks are kept in: [sqrt(tiny), largest float below 1] of their dtype.

    A sample can round to exactly 0 or 1 (Beta sampling with small concentrations does), and log(0) would
    poison the batch; nothing else is cut. In float32 that is [1.1e-19, 1 - 6e-8]: |logit v| reaches 43.7
    below and 16.6 above, where the representable floats end, and 1 / v (the gradient of log v) stays far
    from overflow. (A fixed 1e-6 used to map every v below 1e-6 to logit -13.8 with zero gradient, which the
    Beta family's sticks reach once the encoder's evidence passes about 1e4.)
    """
    info = torch.finfo(dtype)
    return math.sqrt(info.tiny), 1.0 - info.eps / 2


def clamp_sticks(v: Tensor) -> Tensor:
    """Keep sticks strictly inside (0, 1) so that log v and log(1 - v) are finite (see `stick_bounds`)."""
    low, high = stick_bounds(v.dtype)
    return v.clamp(low, high)


def log_stick_weights(v: Tensor) -> Tensor:
    """log pi (shape [..., K]) from sticks v (shape [..., K - 1])."""
    v = clamp_sticks(v)
    log_v = torch.log(v)
    log_rest = torch.log1p(-v)
    # log prod_{j<k}(1 - v_j) for k = 1..K: an exclusive cumulative sum, 0 for k = 1.
    remaining = torch.cumsum(log_rest, dim=-1)
    remaining_before = torch.cat([torch.zeros_like(remaining[..., :1]), remaining], dim=-1)
    log_v_padded = torch.cat([log_v, torch.zeros_like(log_v[..., :1])], dim=-1)  # v_K = 1
    return log_v_padded + remaining_before


def log_stick_weights_from_logits(x: Tensor) -> Tensor:
    """log pi (shape [..., K]) from the sticks' logits x = logit v (shape [..., K - 1]), with no clamping:
    log v = logsigmoid(x) and log(1 - v) = logsigmoid(-x) stay finite and exact for any finite x."""
    remaining = torch.cumsum(torch.nn.functional.logsigmoid(-x), dim=-1)
    remaining_before = torch.cat([torch.zeros_like(remaining[..., :1]), remaining], dim=-1)
    log_v_padded = torch.cat([torch.nn.functional.logsigmoid(x), torch.zeros_like(x[..., :1])], dim=-1)
    return log_v_padded + remaining_before


def stick_weights(v: Tensor) -> Tensor:
    """pi (shape [..., K]) from sticks v (shape [..., K - 1]); sums to one."""
    return torch.exp(log_stick_weights(v))


def sticks_from_weights(pi: Tensor) -> Tensor:
    """Inverse of `stick_weights`: v_k = pi_k / (1 - sum_{j<k} pi_j)."""
    remaining = 1.0 - torch.cumsum(pi, dim=-1) + pi  # mass left before stick k
    return (pi / remaining.clamp_min(torch.finfo(pi.dtype).tiny))[..., :-1]


def expected_stick_weights(mean_v: Tensor) -> Tensor:
    """E[pi] for independent sticks with means E[v_k]: E[pi_k] = E[v_k] prod_{j<k} (1 - E[v_j]).

    Exact because the sticks of a mean-field posterior are independent.
    """
    return stick_weights(mean_v)


def sticks_to_cover(pi: Tensor, mass: float = 0.99) -> Tensor:
    """Smallest k such that pi_1 + ... + pi_k >= mass, for each row of pi (shape [..., K])."""
    covered = torch.cumsum(pi, dim=-1) >= mass - 1e-7
    # argmax returns the first True; the last weight always completes the simplex.
    covered[..., -1] = True
    return covered.float().argmax(dim=-1) + 1


def expected_truncation_mass(alpha: float, truncation: int) -> float:
    """Expected prior mass beyond K - 1 sticks under v ~ Beta(1, alpha): (alpha / (1 + alpha))^(K - 1)."""
    return math.exp((truncation - 1) * math.log(alpha / (1.0 + alpha)))
