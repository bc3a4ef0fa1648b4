"""The policy of ordered and adaptive latents, as numbers and pure functions (no model, no torch state): when a
dimension counts as used, when an exchange or a trim is harmless, and how many dimensions `--truncation auto`
continues with (`train.callbacks.AdaptTruncation` and `OrderDimensions` act on it; the report reads it)."""

from __future__ import annotations

import math

import numpy as np


#: A used dimension carries more than this mean KL (nats): evaluation's KL-active threshold.
USED_DIMENSION_KL = 0.05

#: An exchange stays unless it lowers the mean ELBO of the rows by more than this (nats). Where a dimension sits is
#: worth hundredths of a nat to the ELBO at alpha = 30 (that is why stragglers stay), and an exchange moves it by about
#: +-0.1 (synthetic 2 + 1, measured both ways), which the training that follows takes back; a drop beyond this is not
#: that, and is undone.
EXCHANGE_TOLERANCE = 0.25


def harmless(before: float, after: float) -> bool:
    """A change to the model (exchanges, a trim) stays only if the ELBO after it is finite and at most EXCHANGE_TOLERANCE
    below the ELBO before (a NaN compares False with everything, so `after < before - tol` let a NaN through)."""
    return math.isfinite(after) and after >= before - EXCHANGE_TOLERANCE


#: `--truncation auto` keeps this many unused dimensions after the last used one: it grows when fewer have been free at
#: GROW_PATIENCE epoch starts in a row, and trims to this many when more than twice as many have been free for
#: TRIM_PATIENCE epochs in a row after the warm-up. Growth does not wait: after one epoch a young model's unused
#: dimensions have not yet fallen back to the prior (measured: the 8th of 8 still held 0.19 nats after one epoch on data
#: with 2 factors, 0.002 after two), so it may grow where it need not, but waiting a second epoch cost fit where it had
#: to grow (MNIST, 10 epochs: 1 nat of log p(x); synthetic 12 + 1, 15 epochs: 2 nats), and trimming undoes the rest.
SPARE_DIMENSIONS = 4

GROW_PATIENCE = 1

#: A trim is judged on the mean ELBO over this many sets of draws, before and after (`AdaptTruncation`).
TRIM_DRAWS = 8

TRIM_PATIENCE = 3


def used_span(kl: np.ndarray) -> int:
    """The last dimension (counted from 1) whose mean KL is above USED_DIMENSION_KL; 0 when none is."""
    used = np.flatnonzero(kl > USED_DIMENSION_KL)
    return int(used[-1]) + 1 if len(used) else 0


def full(span: int, current: int) -> bool:
    """Fewer than SPARE_DIMENSIONS unused dimensions after the last used one: growth is due if it lasts."""
    return current - span < SPARE_DIMENSIONS


def next_truncation(span: int, current: int, largest: int, can_grow: bool, can_trim: bool) -> int:
    """The number of dimensions to continue with, given the last used one (`span`): when `can_grow` and the latent is
    `full`, grow to span + 2 SPARE_DIMENSIONS, or double it when every dimension is used (how many more it needs is then
    unknown), at most `largest`; when `can_trim` and more than SPARE_DIMENSIONS are free, trim to span + SPARE_DIMENSIONS;
    otherwise stay. After a growth 2 SPARE_DIMENSIONS are free: neither full nor `too_wide`, so it does not swing back."""
    if can_grow and full(span, current) and current < largest:
        return min(largest, max(2 * current if span >= current else 0, span + 2 * SPARE_DIMENSIONS))
    if can_trim and current > span + SPARE_DIMENSIONS:
        return span + SPARE_DIMENSIONS
    return current


def too_wide(span: int, current: int) -> bool:
    """More than twice SPARE_DIMENSIONS unused dimensions after the last used one: a trim is due if it lasts."""
    return current - span > 2 * SPARE_DIMENSIONS
