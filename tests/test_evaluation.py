"""Evaluation pieces: subsets, probes, coherence wiring, classifier cache."""

import math

import numpy as np
import pytest
import torch

from infinimodal import MultimodalVAE
from infinimodal.data import load_dataset
from infinimodal.evaluation import classifiers as classifier_module
from infinimodal.evaluation import coherence, load_classifiers, subsets_by_size
from infinimodal.evaluation.metrics import probe_accuracy


def test_subsets_by_size_enumerates_small_and_samples_large():
    small = subsets_by_size(3)
    assert {k: len(v) for k, v in small.items()} == {1: 3, 2: 3, 3: 1}
    large = subsets_by_size(8, max_subsets=10)
    for size, chosen in large.items():
        assert len(chosen) == min(10, math.comb(8, size))
        assert len(set(chosen)) == len(chosen) and all(len(s) == size for s in chosen)


def test_probe_is_perfect_on_separable_codes_and_chance_on_noise():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 2000)
    separable = np.eye(4)[labels] * 3 + rng.normal(0, 0.3, (2000, 4))
    assert probe_accuracy(separable[:1000], labels[:1000], separable[1000:], labels[1000:]) > 0.99
    noise = rng.normal(size=(2000, 4))
    assert probe_accuracy(noise[:1000], labels[:1000], noise[1000:], labels[1000:]) < 0.35


class Constant:
    def __init__(self, name, label):
        self.name, self.label, self.test_accuracy = name, label, 0.0

    def predict(self, x):
        return torch.full((len(x),), self.label, dtype=torch.long)


@pytest.fixture(scope="module")
def small():
    data = load_dataset("synthetic:modalities=3,shared=2,private=1,features=5,n=300")
    vae = MultimodalVAE(data.modalities, latent="gaussian", aggregator="moe", latent_dim=3, hidden=[8])
    return data, vae


def test_coherence_counts_what_the_classifiers_say(small):
    data, vae = small
    subsets = subsets_by_size(3)
    agreeing = [Constant(n, 0) for n in data.names]
    result = coherence(vae.module, data.test, agreeing, subsets, n_joint=50, progress=False)
    share_of_zeros = float((data.test.labels == 0).mean())
    assert result["conditional"] == {"1": pytest.approx(share_of_zeros), "2": pytest.approx(share_of_zeros)}
    assert result["joint"] == 1.0
    disagreeing = [Constant(n, i) for i, n in enumerate(data.names)]
    assert coherence(vae.module, data.test, disagreeing, subsets, n_joint=50, progress=False)["joint"] == 0.0


def test_classifiers_are_trained_once_and_cached(small, monkeypatch):
    data, _ = small
    first = load_classifiers(data, progress=False)
    assert [c.name for c in first] == data.names and all(0 <= c.test_accuracy <= 1 for c in first)
    assert max(c.test_accuracy for c in first) > 0.5  # the labels depend on the shared factors every modality sees

    def refuse(*args, **kwargs):
        raise AssertionError("retrained a cached classifier")

    monkeypatch.setattr(classifier_module, "train_classifier", refuse)
    again = load_classifiers(data, progress=False)
    x = torch.from_numpy(data.test.arrays["x0"][:20])
    torch.testing.assert_close(again[0].predict(x), first[0].predict(x))
    assert [c.test_accuracy for c in again] == [c.test_accuracy for c in first]


def test_classifier_cache_key_ignores_the_models_likelihood_but_not_the_data():
    spec = "synthetic:modalities=2,shared=2,private=1,features=5,n=200"
    plain = load_dataset(spec)
    relabelled_law = load_dataset(spec, likelihoods={"*": "laplace"})
    assert [m.likelihood for m in relabelled_law.modalities] != [m.likelihood for m in plain.modalities]
    assert classifier_module.data_fingerprint(relabelled_law) == classifier_module.data_fingerprint(plain)
    other_data = load_dataset("synthetic:modalities=2,shared=2,private=1,features=5,n=200,seed=1")
    assert classifier_module.data_fingerprint(other_data) != classifier_module.data_fingerprint(plain)


def test_coherence_over_several_batches_scores_each_row_against_its_own_label():
    """Batches of 7 rows and missing modalities: a constant classifier's accuracy on a subset is the share of
    label 0 among exactly the rows that observe the subset, which a wrong batch offset would not give."""
    data = load_dataset("synthetic:modalities=3,shared=2,private=1,features=5,n=400,missing=0.3")
    vae = MultimodalVAE(data.modalities, latent="gated", aggregator="mopoe", latent_dim=3, hidden=[8])
    subsets = subsets_by_size(3)
    result = coherence(
        vae.module, data.test, [Constant(n, 0) for n in data.names], subsets, n_joint=20, batch_size=7, progress=False
    )
    labels, mask = np.asarray(data.test.labels), data.test.mask
    for size in ("1", "2"):
        shares = [float((labels[mask[:, list(s)].all(axis=1)] == 0).mean()) for s in subsets[int(size)]]
        assert result["conditional"][size] == pytest.approx(np.mean(shares))
    # the offset matters here: the share among the first rows of each batch differs from the whole
    assert not mask.all()


def test_probe_ignores_a_coordinate_that_only_carries_rounding_noise():
    from infinimodal.evaluation.metrics import probe_accuracy

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    informative = rng.normal(size=(600, 4)) + y[:, None]
    noise = 0.3 + 3e-8 * rng.normal(size=(600, 1))  # an unused stick's weight: constant up to float32 rounding
    with_noise = np.hstack([informative, noise])
    expected = probe_accuracy(informative[:400], y[:400], informative[400:], y[400:])
    assert probe_accuracy(with_noise[:400], y[:400], with_noise[400:], y[400:]) == expected


def test_every_declared_metric_names_the_function_that_computes_it():
    from infinimodal.evaluation import catalogue, metrics
    from infinimodal.stick_breaking import sticks_to_cover

    for metric in catalogue.METRICS:
        assert metric.computed_by, metric.key
        if not metric.computed_by.startswith("the training plan"):
            assert (
                callable(getattr(metrics, metric.computed_by, None)) or metric.computed_by == sticks_to_cover.__name__
            ), metric.key
    assert catalogue.metric_of("imputation_mse / mri / model").key == "imputation_mse"
    assert (
        catalogue.direction("imputation_mse / mri / model") == -1
        and catalogue.direction("imputation_mse / mri / ridge") == 0
    )


def test_a_coherence_classifier_without_validation_rows_says_it_kept_the_last_epoch():
    data = load_dataset("synthetic:modalities=2,shared=2,private=1,features=5,n=300")
    data.valid.mask[:, 0] = False  # no validation row observes x0: no epoch can be chosen on validation rows
    with pytest.warns(UserWarning, match="no validation row observes x0; .* keeps the last of 2 epochs"):
        trained = classifier_module.train_classifier(data, 0, epochs=2, progress=False)
    assert 0 <= trained.test_accuracy <= 1


def test_coherence_refuses_data_without_validation_labels_by_name():
    data = load_dataset("synthetic:modalities=2,shared=2,private=1,features=5,n=300")
    data.valid.labels = None
    with pytest.raises(ValueError, match="coherence needs labels; its valid rows have none"):
        classifier_module.train_classifier(data, 0, epochs=1, progress=False)
