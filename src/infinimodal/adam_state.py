"""Adam's state kept in step with parameters that change shape or exchange entries during training.

Ordered dimensions are exchanged (`MultimodalModule.swap_dimensions`) and an adaptive latent grows and trims
(`MultimodalModule.resize_dimensions`) while Adam is running: its moments must move, scale and resize with the
entries they belong to, and entries born after the run's first step need Adam's bias correction for their own step
count (`correct_young_entries`, called by the training plan after every step). Exact for torch's Adam without weight
decay or amsgrad.
"""

from __future__ import annotations

import itertools
import weakref

import torch
from torch import Tensor, nn


def moments(state: dict, parameter: Tensor) -> tuple[Tensor, ...]:
    """Adam's first and second moments of a parameter, when the optimiser has taken a step with it."""
    entry = state.get(parameter, {})
    return (entry["exp_avg"], entry["exp_avg_sq"]) if "exp_avg" in entry and "exp_avg_sq" in entry else ()


def births(state: dict, parameter: Tensor) -> tuple[Tensor, ...]:
    """The Adam step at which each entry of a parameter was born (`BORN`), where the latent was resized."""
    entry = state.get(parameter, {})
    return (entry[BORN],) if BORN in entry else ()


#: Key of an Adam state entry: the step at which each entry of the parameter was born (0 for the first ones; the step of
#: a resize for the rows and columns it added).
BORN = "born_at_step"
#: After this many steps of its own, an entry's bias correction is within float32 of the run's: its birth is forgotten.
BIAS_CORRECTION_STEPS = 20_000


#: Each births tensor's young entries, by the tensor's id, with a weak reference to it (an id can be reused once it is
#: gone) and its version (a swap exchanges births in place).
_YOUNG: dict[int, tuple[weakref.ref, int, Tensor, Tensor, Tensor, float]] = {}


def young_entries(born: Tensor) -> tuple[Tensor, Tensor, Tensor, float]:
    """(flat indices of the entries born after the run's first step, the distinct steps they were born at, which of
    those each was born at, the latest birth), worked out once for each births tensor and again only when it changes."""
    cached = _YOUNG.get(id(born))
    if cached is None or cached[0]() is not born or cached[1] != born._version:
        for key in [key for key, value in _YOUNG.items() if value[0]() is None]:
            del _YOUNG[key]
        flat = born.reshape(-1)
        young = torch.nonzero(flat > 0).squeeze(-1)
        births, which = torch.unique(flat[young], return_inverse=True)
        cached = (weakref.ref(born), born._version, young, births, which, float(births.max()) if young.numel() else 0.0)
        _YOUNG[id(born)] = cached
    return cached[2:]


@torch.no_grad()
def correct_young_entries(optimizer: torch.optim.Optimizer) -> None:
    """After an Adam step: move the entries born after the run's first step (rows and columns a resize added) to where
    Adam with their own step count would have put them. Their moments started at zero while the run's step count went
    on, so the step's bias correction treated their young moments as old ones: 3 to 6 times too large a step for
    hundreds of steps (m / sqrt(v) is 0.1 / sqrt(0.001) = 3.2 after one step, where Adam's corrected step is 1).
    Exact for torch's Adam without weight decay or amsgrad (the step is undone and redone with the entry's age).

    Only the young entries are touched (an entry as old as the run needs nothing), in the parameter's dtype: the
    difference of the two steps is at most a few lr, so float32's rounding of it is far below Adam's own. (Done on every
    entry in float64 it took a sixth of a small model's training time for 20,000 steps after each resize.)"""
    for group in optimizer.param_groups:
        together: dict[tuple, list] = {}  # parameters whose young entries are corrected in one computation
        for parameter in group["params"]:
            entry = optimizer.state.get(parameter, {})
            if BORN not in entry:
                continue
            step = float(entry["step"])
            young, births, which, youngest = young_entries(entry[BORN])
            if young.numel() == 0 or step - youngest > BIAS_CORRECTION_STEPS:
                del entry[BORN]
                continue
            key = (parameter.device, parameter.dtype, step)
            together.setdefault(key, []).append((parameter, entry, young, births, which))
        for (_, _, step), members in together.items():
            _redo_young_steps(members, step, group)


def _redo_young_steps(members: list[tuple[Tensor, dict, Tensor, Tensor, Tensor]], step: float, group: dict) -> None:
    """Undo the last Adam step of the young entries of several parameters (same device, dtype and step count) and redo
    it with each entry's own age, all of them in one computation: the bias corrections are worked out for the few
    distinct birth steps and gathered, and the rest is a handful of elementwise operations."""
    (beta1, beta2), eps, lr = group["betas"], group["eps"], group["lr"]
    m, v = (
        torch.cat([entry[moment].reshape(-1).index_select(0, young) for _, entry, young, *_ in members])
        for moment in ("exp_avg", "exp_avg_sq")
    )
    offsets = [0, *itertools.accumulate(len(births) for *_, births, _ in members)][:-1]
    which = torch.cat([which + offset for (*_, which), offset in zip(members, offsets)])
    age = (step - torch.cat([births for *_, births, _ in members])).clamp(min=1.0)  # float32: exact step counts
    first, second = (
        (1 - beta1**age).to(m.dtype).index_select(0, which),
        (1 - beta2**age).rsqrt().to(m.dtype).index_select(0, which),
    )
    root = v.sqrt()
    applied = m / ((1 - beta1**step) * (root * (1 - beta2**step) ** -0.5 + eps))
    wanted = m / (first * (root * second + eps))
    changes = (lr * (applied - wanted)).split([len(young) for _, _, young, *_ in members])
    for (parameter, _, young, *_), change in zip(members, changes):
        parameter.view(-1).index_add_(0, young, change)


def replace_parameter(module: nn.Module, name: str, resized, optimizer: torch.optim.Optimizer | None) -> None:
    """module.<name> := a new Parameter resized(old value, False); the optimiser's parameter list and state follow it, its
    moments resized(moment, True). A new Parameter, not new .data: autograd caches a parameter's shape where the last
    step's graph is still held."""
    old = getattr(module, name)
    new = nn.Parameter(resized(old.detach(), False), requires_grad=old.requires_grad)
    setattr(module, name, new)
    if optimizer is None:
        return
    for group in optimizer.param_groups:
        group["params"] = [new if p is old else p for p in group["params"]]
    entry = optimizer.state.pop(old, None)
    if entry is not None:
        for moment in ("exp_avg", "exp_avg_sq"):
            if moment in entry:
                entry[moment] = resized(entry[moment], True)
        if "step" in entry:  # new entries are born now: Adam's bias correction must count their steps, not the run's
            step = entry["step"].to(old.device, torch.float32)
            born = entry.get(BORN, torch.zeros_like(old, dtype=torch.float32))
            entry[BORN] = resized(born - step, True) + step
        optimizer.state[new] = entry
