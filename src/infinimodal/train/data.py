"""Batches for training: the data module over `MultimodalData`, the (seed, epoch) shuffle that shards rows over
processes, and the oversampling of rows where a rare modality (a label) is observed."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from ..data import MultimodalData, Split
from ..distributed import _group_rank, epoch_seed
from ..errors import InfinimodalError


class _Rows(torch.utils.data.Dataset):
    """Row indices; the collate function fetches a whole batch of rows at once (fancy indexing is fast)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class EpochShuffle(Sampler[int]):
    """A permutation of range(n) that depends only on (seed, epoch); Lightning calls `set_epoch`. Under
    multi-process training, rank r of R takes rows r, r + R, ... of it, padded (with its first rows) to the
    same count on every rank, as torch's DistributedSampler does, so that every rank runs as many steps."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.n / _group_rank()[1])

    def __iter__(self):
        rank, world = _group_rank()
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, 2))
        order = torch.randperm(self.n, generator=generator).tolist()
        padded = order + order[: len(self) * world - self.n]
        return iter(padded[rank::world])


#: A training batch's key: how many of its last rows `OversampledShuffle` appended (absent: none).
APPENDED_ROWS = "appended_rows"


class OversampledShuffle(Sampler[int]):
    """EpochShuffle's permutation of range(n) in blocks of `batch` rows, each block followed by `extra` rows drawn
    from `rows` (the rows where a rarely observed modality, a label, is observed): a loader with batch size
    batch + extra gives every batch that many of those rows, and every row still comes once per epoch in the
    blocks. The extra rows run through successive permutations of `rows` (seeded by seed and epoch), so within an
    epoch each is drawn as often as the others, to within one; a row may come in a block and among the extra rows
    of the same batch. One process only (it is refused under DDP).

    The loader marks its batches with how many rows were appended (`APPENDED_ROWS`): the training means that
    metrics.csv logs leave them out, so they average each training row once, as without the option."""

    def __init__(self, n: int, rows: np.ndarray, batch: int, extra: int, seed: int) -> None:
        if len(rows) == 0:
            raise InfinimodalError("no training row has the modality to oversample observed")
        self.n, self.rows, self.batch, self.extra, self.seed, self.epoch = n, np.asarray(rows), batch, extra, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n + self.extra * math.ceil(self.n / self.batch)

    def __iter__(self):
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, 2))
        order = torch.randperm(self.n, generator=generator).tolist()
        blocks = math.ceil(self.n / self.batch)
        laps = math.ceil(blocks * self.extra / len(self.rows))
        stream = np.concatenate(
            [self.rows[torch.randperm(len(self.rows), generator=generator).numpy()] for _ in range(laps)]
        ).tolist()
        for b in range(blocks):
            yield from order[b * self.batch : (b + 1) * self.batch]
            yield from stream[b * self.extra : (b + 1) * self.extra]


class MultimodalDataModule(L.LightningDataModule):
    """Train / validation loaders over a `MultimodalData`; dynamically binarised modalities are drawn per batch.
    `oversample` = (modality, k): each training batch also gets k rows where that modality is observed
    (`OversampledShuffle`)."""

    def __init__(
        self,
        data: MultimodalData,
        batch_size: int = 100,
        seed: int = 0,
        valid_batch_size: int = 500,
        oversample: tuple[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.data = data
        self.batch_size = batch_size
        self.valid_batch_size = valid_batch_size
        self.seed = seed
        self.oversample = oversample

    def _loader(
        self, split: Split, batch_size: int, sampler: Sampler | None, binarize=(), appended: int = 0
    ) -> DataLoader:
        """Batches of `split`; `appended`: the rows the sampler adds at the end of every batch (`APPENDED_ROWS`)."""
        marked = {APPENDED_ROWS: appended} if appended else {}
        return DataLoader(
            _Rows(len(split)),
            batch_size,
            sampler=sampler,
            # a generator of its own: the loader's base seed must not draw from torch's global stream
            generator=torch.Generator().manual_seed(self.seed),
            collate_fn=lambda rows: split.batch(np.asarray(rows), binarize) | marked,
        )

    def train_dataloader(self) -> DataLoader:
        train = self.data.train
        if self.oversample is None:
            return self._loader(
                train, self.batch_size, EpochShuffle(len(train), self.seed), binarize=self.data.dynamic_binarize
            )
        name, extra = self.oversample
        observed = np.flatnonzero(train.mask[:, [m.name for m in self.data.modalities].index(name)])
        sampler = OversampledShuffle(len(train), observed, self.batch_size, extra, self.seed)
        return self._loader(
            train, self.batch_size + extra, sampler, binarize=self.data.dynamic_binarize, appended=extra
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data.valid, self.valid_batch_size, None)


def validation_rows(trainer, plan, rows: int) -> tuple[dict, Tensor]:
    """The first `rows` validation rows as (data, mask) on the plan's device."""
    split = trainer.datamodule.data.valid
    batch = split.batch(np.arange(min(rows, len(split))))
    return {k: v.to(plan.device) for k, v in batch["data"].items()}, batch["mask"].to(plan.device)
