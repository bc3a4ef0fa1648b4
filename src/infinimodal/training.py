"""Lightning glue: a training plan that calls the model and logs, and a data module over `MultimodalData`.

The plan knows nothing of the model's insides: it asks for a `LossOutput` and logs its fields.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from .data import MultimodalData, Split
from .model import MultimodalModule


class TrainingPlan(L.LightningModule):
    """Adam on the aggregator's objective, with the KL weight ramped linearly from 0 to `kl_weight` (beta of the
    beta-VAE; 1 is the ELBO) over `kl_warmup` epochs. Validation always reports the ELBO (weight 1)."""

    def __init__(self, model: MultimodalModule, lr: float = 1e-3, kl_warmup: float = 0.0, kl_weight: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.lr = lr
        self.kl_warmup = kl_warmup
        self.final_kl_weight = kl_weight

    def kl_weight(self) -> float:
        if self.kl_warmup <= 0:
            return self.final_kl_weight
        steps_per_epoch = max(1, int(self.trainer.num_training_batches))
        return self.final_kl_weight * min(1.0, self.global_step / (self.kl_warmup * steps_per_epoch))

    def training_step(self, batch, batch_idx):
        weight = self.kl_weight()
        out = self.model(batch["data"], batch["mask"], kl_weight=weight)
        n = batch["mask"].shape[0]
        self.log("train_loss", out.loss, prog_bar=True, batch_size=n)
        self.log("train_elbo", out.elbo.mean(), on_step=False, on_epoch=True, batch_size=n)
        self.log("train_reconstruction", out.reconstruction.mean(), on_step=False, on_epoch=True, batch_size=n)
        self.log("train_kl", out.kl.mean(), on_step=False, on_epoch=True, batch_size=n)
        self.log("kl_weight", weight, on_step=False, on_epoch=True, batch_size=n)
        return out.loss

    def validation_step(self, batch, batch_idx):
        out = self.model(batch["data"], batch["mask"], kl_weight=1.0)
        n = batch["mask"].shape[0]
        self.log("val_elbo", out.elbo.mean(), prog_bar=True, batch_size=n)
        self.log("val_reconstruction", out.reconstruction.mean(), batch_size=n)
        self.log("val_kl", out.kl.mean(), batch_size=n)

    def configure_optimizers(self):
        return torch.optim.Adam(self.model.parameters(), lr=self.lr)


class _Rows(torch.utils.data.Dataset):
    """Row indices; the collate function fetches a whole batch of rows at once (fancy indexing is fast)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class MultimodalDataModule(L.LightningDataModule):
    """Train / validation loaders over a `MultimodalData`; dynamically binarised modalities are drawn per batch."""

    def __init__(self, data: MultimodalData, batch_size: int = 100, seed: int = 0, valid_batch_size: int = 500) -> None:
        super().__init__()
        self.data = data
        self.batch_size = batch_size
        self.valid_batch_size = valid_batch_size
        self.seed = seed

    def _loader(self, split: Split, batch_size: int, shuffle: bool, binarize=()) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            _Rows(len(split)), batch_size, shuffle=shuffle, generator=generator,
            collate_fn=lambda rows: split.batch(np.asarray(rows), binarize),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.data.train, self.batch_size, shuffle=True, binarize=self.data.dynamic_binarize)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data.valid, self.valid_batch_size, shuffle=False)
