"""Where this process stands among the processes of a training run (rank, world size), and the seed of each
epoch's random streams: small, Lightning-free helpers that every layer may ask."""

from __future__ import annotations

import os


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """The seed of one epoch's random stream (0: training, 1: validation, 2: data order, 3 + r: training on rank r > 0)."""
    return (seed * 1_000_003 + epoch * 7_919 + stream) % (2**63 - 1)


def _group_rank() -> tuple[int, int]:
    """(rank, world size) in the process group; (0, 1) when there is none (a single process takes every row)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def process_rank() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside multi-process training. Before the process group
    exists, from the variables a launcher sets: Lightning's own launcher starts ranks 1.. with LOCAL_RANK (and
    NODE_RANK), torchrun sets RANK. (Under srun, Lightning takes the rank from SLURM once training starts; before
    that every task counts as rank 0, and they write the same config.json atomically.)"""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return _group_rank()
    world = int(os.environ.get("WORLD_SIZE", 1))
    if "RANK" in os.environ:
        return int(os.environ["RANK"]), world
    if "LOCAL_RANK" in os.environ:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        return int(os.environ.get("NODE_RANK", 0)) * local_world + int(os.environ["LOCAL_RANK"]), world
    return 0, 1


def is_rank_zero() -> bool:
    """Whether this process writes the run directory (only rank 0 does)."""
    return process_rank()[0] == 0
