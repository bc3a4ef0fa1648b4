"""Long runs (`make test-slow`): real training on full MNIST reaches a sensible fit."""

import json

import pytest

from infinimodal import api


@pytest.mark.slow
@pytest.mark.parametrize("latent", ["gaussian", "beta"])
def test_five_epochs_on_mnist_learn_a_useful_representation(latent, tmp_path, mnist_dir):
    config = api.TrainConfig(latent=latent, epochs=5, kl_warmup=2, data_dir=str(mnist_dir))
    out = api.train(config, tmp_path / latent, progress=False)
    result = api.evaluate(out, iw_samples=50, max_test=2000, progress=False)
    # A VAE that learned nothing sits near -200 nats (pixel marginals alone); after 5 epochs this
    # architecture is well past -120, and its latents separate the digits (chance kNN error is 0.9).
    assert result["elbo"] > -120
    assert result["log_likelihood"] > result["elbo"]
    assert result["knn_error"]["10"] < 0.15
    assert json.loads((out / "config.json").read_text())["n_train"] == 50_000
