"""Numerical health: every latent family x aggregator trains without a non-finite loss, gradient or weight at the
edges: K = 2 (one stick, one dimension), alpha = 0.5 and 20, one modality observed per row, data scaled by 1e3.
The fast test runs each edge for 20 steps with one seed each; the slow one 200 steps over 5 seeds per edge."""

import pytest
import torch

from infinimodal.aggregators import AGGREGATORS, build_aggregator
from infinimodal.latents import LATENT_FAMILIES, build_latent
from infinimodal.model import MultimodalModule
from infinimodal.train.plan import RelativeClip
from tests.test_model import MODALITIES, batch

EDGES = {
    "K=2": {"truncation": 2, "latent_dim": 1},
    "alpha=0.5": {"alpha": 0.5},
    "alpha=20": {"alpha": 20.0},
    "one modality per row": {},
    "data x 1e3": {},
}


def soak(family: str, aggregator: str, edge: str, seed: int, steps: int) -> None:
    torch.manual_seed(seed)
    settings = {"truncation": 6, "alpha": 3.0, "latent_dim": 5} | EDGES[edge]
    model = MultimodalModule(
        MODALITIES, build_latent(family, **settings), build_aggregator(aggregator, moe_samples=2), hidden=[16]
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    clip = RelativeClip(10.0)
    for step in range(steps):
        data, mask = batch(n=32, seed=seed * 10_000 + step)
        if edge == "one modality per row":
            mask = torch.nn.functional.one_hot(torch.randint(0, len(MODALITIES), (32,)), len(MODALITIES)).bool()
        if edge == "data x 1e3":
            data = {k: v * 1e3 if k != "bits" else v for k, v in data.items()}
        out = model(data, mask, kl_weight=min(1.0, step / 20))
        where = f"{family}/{aggregator}, {edge}, seed {seed}, step {step}"
        assert torch.isfinite(out.loss), f"non-finite loss at {where}"
        optimiser.zero_grad()
        out.loss.backward()
        bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        assert not bad, f"non-finite gradient of {bad[:3]} at {where}"
        clip(model.parameters())
        optimiser.step()
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    assert not bad, f"non-finite weights {bad[:3]} after {family}/{aggregator}, {edge}, seed {seed}"


@pytest.mark.parametrize("aggregator", list(AGGREGATORS))
@pytest.mark.parametrize("family", list(LATENT_FAMILIES))
def test_every_family_and_aggregator_stays_finite_at_the_edges(family, aggregator):
    for seed, edge in enumerate(EDGES):
        soak(family, aggregator, edge, seed, steps=20)


@pytest.mark.slow
@pytest.mark.parametrize("aggregator", list(AGGREGATORS))
@pytest.mark.parametrize("family", list(LATENT_FAMILIES))
def test_soak_200_steps_over_5_seeds_at_every_edge(family, aggregator):
    for edge in EDGES:
        for seed in range(5):
            soak(family, aggregator, edge, seed, steps=200)
