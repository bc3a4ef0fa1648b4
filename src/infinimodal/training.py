"""Lightning glue: a training plan that calls the model and logs, and a data module for binarised MNIST.

The plan knows nothing of the model's insides: it asks for a `LossOutput` and logs its fields.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from .model import VAE


class VAETrainingPlan(L.LightningModule):
    """Adam on the negative ELBO, with the KL weight ramped linearly from 0 to 1 over `kl_warmup` epochs."""

    def __init__(self, model: VAE, lr: float = 1e-3, kl_warmup: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.lr = lr
        self.kl_warmup = kl_warmup

    def kl_weight(self) -> float:
        if self.kl_warmup <= 0:
            return 1.0
        steps_per_epoch = max(1, int(self.trainer.num_training_batches))
        return min(1.0, self.global_step / (self.kl_warmup * steps_per_epoch))

    def training_step(self, batch, batch_idx):
        weight = self.kl_weight()
        out = self.model(batch[0], kl_weight=weight)
        n = batch[0].shape[0]
        self.log("train_loss", out.loss, prog_bar=True, batch_size=n)
        self.log("train_elbo", out.elbo.mean(), on_step=False, on_epoch=True, batch_size=n)
        self.log("train_kl", out.kl.mean(), on_step=False, on_epoch=True, batch_size=n)
        self.log("kl_weight", weight, on_step=False, on_epoch=True, batch_size=n)
        return out.loss

    def validation_step(self, batch, batch_idx):
        out = self.model(batch[0], kl_weight=1.0)
        n = batch[0].shape[0]
        self.log("val_elbo", out.elbo.mean(), prog_bar=True, batch_size=n)
        self.log("val_reconstruction", out.reconstruction.mean(), batch_size=n)
        self.log("val_kl", out.kl.mean(), batch_size=n)

    def configure_optimizers(self):
        return torch.optim.Adam(self.model.parameters(), lr=self.lr)


def _dynamic_binarization(batch):
    """Collate intensities and draw fresh binary pixels each time (Salakhutdinov & Murray 2008)."""
    images = torch.stack([item[0] for item in batch])
    labels = torch.stack([item[1] for item in batch])
    return torch.bernoulli(images), labels


class ArrayDataModule(L.LightningDataModule):
    """Train/validation arrays as loaders; training images are binarised on the fly when `dynamic`."""

    def __init__(
        self,
        train_x: np.ndarray,
        train_y: np.ndarray,
        valid_x: np.ndarray,
        valid_y: np.ndarray,
        batch_size: int = 100,
        dynamic_binarization: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.train_set = TensorDataset(torch.from_numpy(train_x), torch.from_numpy(train_y))
        self.valid_set = TensorDataset(torch.from_numpy(valid_x), torch.from_numpy(valid_y))
        self.batch_size = batch_size
        self.dynamic_binarization = dynamic_binarization
        self.seed = seed

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(self.seed)
        collate = _dynamic_binarization if self.dynamic_binarization else None
        return DataLoader(self.train_set, self.batch_size, shuffle=True, generator=generator, collate_fn=collate)

    def val_dataloader(self):
        return DataLoader(self.valid_set, batch_size=1000)
