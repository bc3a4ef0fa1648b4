"""Per-modality label classifiers for coherence, trained once per data set and cached.

Coherence (Shi et al. 2019; Sutter et al. 2021) asks whether a generated modality shows the label it
should: a classifier trained on real data of that modality reads the generated sample. Each classifier
is the modality's default encoder network (small CNN for images, MLP for vectors) with a linear layer on
top, trained with Adam on the observed training rows and early-stopped on validation accuracy. It is
cached under `$INFINIMODAL_CACHE/classifiers/<data fingerprint>/`, with its test accuracy, which
`eval.json` reports next to the coherence it underlies.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import MultimodalData, Split
from ..data.cache import cache_root, fingerprint
from ..modality import Modality
from ..nets import default_encoder

CLASSIFIER_HIDDEN = (256,)


@dataclass
class ModalityClassifier:
    name: str
    net: nn.Module
    test_accuracy: float

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        self.net.eval()
        return (
            torch.cat([self.net(x[i : i + batch_size]).argmax(-1) for i in range(0, len(x), batch_size)])
            if len(x)
            else torch.zeros(0, dtype=torch.long)
        )


def _network(modality: Modality, n_classes: int) -> nn.Module:
    return nn.Sequential(
        default_encoder(modality.shape, CLASSIFIER_HIDDEN), nn.Linear(CLASSIFIER_HIDDEN[-1], n_classes)
    )


def _observed(split: Split, m: int, name: str, binarize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    rows = np.flatnonzero(split.mask[:, m])
    batch = split.batch(rows, [name] if binarize else ())
    return batch["data"][name], batch["labels"]


def _accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The share of rows classified right; NaN for no rows."""
    if not len(y):
        return float("nan")
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(x[i : i + 1000]).argmax(-1) for i in range(0, len(x), 1000)])
    return float((pred == y).float().mean())


def _train_and_test_labels(data: MultimodalData) -> tuple[np.ndarray, np.ndarray]:
    unlabelled = [name for name in ("train", "valid", "test") if data.split(name).labels is None]
    if unlabelled:
        raise ValueError(f"{data.source}: coherence needs labels; its {' and '.join(unlabelled)} rows have none")
    return cast(np.ndarray, data.train.labels), cast(np.ndarray, data.test.labels)  # (checked above)


def train_classifier(
    data: MultimodalData, m: int, epochs: int = 5, batch_size: int = 128, seed: int = 0, progress: bool = True
) -> ModalityClassifier:
    modality = data.modalities[m]
    train_labels, test_labels = _train_and_test_labels(data)
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    torch.manual_seed(seed)
    net = _network(modality, n_classes)
    binarize = modality.name in data.dynamic_binarize
    x, y = _observed(data.train, m, modality.name, binarize)
    xv, yv = _observed(data.valid, m, modality.name, False)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    best, best_state = -1.0, None
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(x), generator=generator)
        steps = range(0, len(x), batch_size)
        for start in tqdm(
            steps, desc=f"classifier {modality.name}, epoch {epoch + 1}/{epochs}", disable=not progress, leave=False
        ):
            idx = order[start : start + batch_size]
            optimiser.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            optimiser.step()
        accuracy = _accuracy(net, xv, yv)
        if accuracy > best:
            best, best_state = accuracy, {k: v.clone() for k, v in net.state_dict().items()}
    if best_state is not None:
        net.load_state_dict(best_state)
    else:  # no validation row observes the modality (accuracy NaN): no epoch can be chosen, and the user is told
        warnings.warn(
            f"{data.source}: no validation row observes {modality.name}; its coherence classifier keeps the last of "
            f"{epochs} epochs instead of the best on validation rows",
            stacklevel=2,
        )
    xt, yt = _observed(data.test, m, modality.name, False)
    return ModalityClassifier(modality.name, net, _accuracy(net, xt, yt))


def data_fingerprint(data: MultimodalData) -> str:
    arrays = [*_train_and_test_labels(data), data.train.mask]
    arrays += [np.asarray(data.train.arrays[m.name][:64]) for m in data.modalities]
    # names and shapes only: a likelihood chosen for the model does not change what a classifier learns
    spec = json.dumps([[m.name, list(m.shape)] for m in data.modalities]) + data.source
    return fingerprint(*arrays, extra=spec)


def load_classifiers(data: MultimodalData, progress: bool = True) -> list[ModalityClassifier]:
    """One classifier per modality for this data set: from the cache, or trained now and cached."""
    train_labels, test_labels = _train_and_test_labels(data)
    folder = cache_root() / "classifiers" / data_fingerprint(data)
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    classifiers = []
    for m, modality in enumerate(data.modalities):
        if modality.name == data.label_modality:
            # the label modality's one-hot position is the class: its classifier is the argmax, exact by construction
            classifiers.append(ModalityClassifier(modality.name, nn.Flatten(), 1.0))
            continue
        weights, meta = folder / f"{modality.name}.pt", folder / f"{modality.name}.json"
        if weights.is_file() and meta.is_file():
            net = _network(modality, n_classes)
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            classifiers.append(ModalityClassifier(modality.name, net, json.loads(meta.read_text())["test_accuracy"]))
            continue
        if progress:
            print(
                f"infinimodal: training the {modality.name} classifier for coherence (cached in {folder})", flush=True
            )
        classifier = train_classifier(data, m, progress=progress)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(classifier.net.state_dict(), weights)
        meta.write_text(json.dumps({"test_accuracy": classifier.test_accuracy, "source": data.source}) + "\n")
        classifiers.append(classifier)
    return classifiers
