"""`explain` and `stability`: each dimension's variance explained, feature effects and associations, checked against
closed forms and against data generated with known factors over the modalities and known sparse loadings."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score
from torch import nn

from infinimodal import MultimodalVAE, Modality
from infinimodal.cli import main
from infinimodal.data import load_dataset
from infinimodal.data.factors import factor_pattern
from infinimodal.evaluation.associations import associations
from infinimodal.evaluation.stability import match, stability
from infinimodal.likelihoods import BernoulliLikelihood, CategoricalLikelihood, GaussianLikelihood, PoissonLikelihood

FACTORS = "factors:n=2000,features=20"


def _cli(*args) -> subprocess.CompletedProcess:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, status, out.getvalue(), err.getvalue())


# --- deviances against scipy -------------------------------------------------------------------------------------


def test_deviances_are_twice_the_log_likelihood_gap_to_the_saturated_model():
    rng = np.random.default_rng(0)
    mu = rng.uniform(0.05, 0.95, 50)
    x = rng.integers(0, 2, 50).astype(float)
    got = BernoulliLikelihood((50,)).deviance(torch.tensor(x), torch.tensor(mu)).numpy()
    np.testing.assert_allclose(got, -2 * stats.bernoulli.logpmf(x, mu), rtol=1e-10)  # saturated log-likelihood 0

    rate = rng.uniform(0.1, 20, 50)
    counts = rng.poisson(rate).astype(float)
    got = PoissonLikelihood((50,)).deviance(torch.tensor(counts), torch.tensor(rate)).numpy()
    np.testing.assert_allclose(
        got, 2 * (stats.poisson.logpmf(counts, counts) - stats.poisson.logpmf(counts, rate)), rtol=1e-9, atol=1e-12
    )

    probs = rng.dirichlet(np.ones(4), 30)
    classes = rng.integers(0, 4, 30)
    one_hot = np.eye(4)[classes]
    got = CategoricalLikelihood((4,)).deviance(torch.tensor(one_hot), torch.tensor(probs)).numpy().sum(1)
    np.testing.assert_allclose(got, -2 * np.log(probs[np.arange(30), classes]), rtol=1e-10)

    y, m = rng.normal(size=20), rng.normal(size=20)
    np.testing.assert_allclose(
        GaussianLikelihood((20,)).deviance(torch.tensor(y), torch.tensor(m)).numpy(), (y - m) ** 2
    )


# --- variance explained: the closed form of a linear-Gaussian model ---------------------------------------------------


class _Linear(nn.Module):
    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self.layer = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.layer.weight.copy_(torch.from_numpy(weight).float())
            self.layer.bias.copy_(torch.from_numpy(bias).float())

    def forward(self, code):
        return self.layer(code)


def test_variance_explained_of_a_linear_decoder_is_mofas_closed_form():
    """x_m = W_m c + b_m with b_m the rows' mean: each dimension's R^2 alone is MOFA's 1 - |X - w_j c_j|^2 / |X|^2 (X
    centred), computed here in numpy from the model's own codes (read through `embed`), and the decoders' slopes are
    recovered as the feature effects."""
    rng = np.random.default_rng(1)
    n, dims = 400, 3
    x = {"a": rng.normal(size=(n, 5)) @ np.diag([3, 1, 1, 1, 0.5]), "b": rng.normal(size=(n, 4))}
    weights = {"a": rng.normal(size=(5, dims)), "b": rng.normal(size=(4, dims))}
    modalities = [
        Modality(name, (v.shape[1],), "gaussian", decoder=_Linear(weights[name], v.mean(0))) for name, v in x.items()
    ]
    vae = MultimodalVAE(modalities, latent="gaussian", latent_dim=dims, seed=3)
    arrays = {k: v.astype(np.float32) for k, v in x.items()}
    result = vae.explain(arrays)
    codes = vae.embed(arrays, decoder_space=True)
    assert codes.std(0).min() > 1e-3  # the untrained encoders give codes that vary: the comparison is not 0 = 0
    for name, values in x.items():
        centred = values - values.mean(0)
        for j in range(dims):
            residual = centred - np.outer(codes[:, j], weights[name][:, j])
            expected = 1 - (residual**2).sum() / (centred**2).sum()
            assert result["variance_explained"][name][j] == pytest.approx(expected, abs=1e-4)
            # leave one out: R^2 of all dimensions minus R^2 without j, both closed forms
            full = centred - codes @ weights[name].T
            without = full + np.outer(codes[:, j], weights[name][:, j])
            loo = (without**2).sum() / (centred**2).sum() - (full**2).sum() / (centred**2).sum()
            assert result["variance_explained_leave_one_out"][name][j] == pytest.approx(loo, abs=1e-4)
            # the effect of moving c_j between its percentiles is w_j times that distance
            low, high = np.percentile(codes[:, j], [5, 95])
            np.testing.assert_allclose(
                result["feature_effects"][name]["effects"][j], weights[name][:, j] * (high - low), rtol=1e-3, atol=1e-4
            )
    assert result["variance_explained_measure"] == {"a": "squared error", "b": "squared error"}


# --- recovery on data with a known pattern ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def factors_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("factors")
    done = _cli("train", "--data", FACTORS, "--epochs", "25", "--latent-dim", "10", "--quiet", "--out", root / "run")
    assert done.returncode == 0, done.stderr
    done = _cli("explain", root / "run", "--out", root / "explain.json")
    assert done.returncode == 0, done.stderr
    return root, json.loads((root / "explain.json").read_text()), done


def test_explain_finds_each_true_factor_its_modalities_and_its_features(factors_run):
    from infinimodal import api

    root, result, _ = factors_run
    data = load_dataset(FACTORS)
    truth = data.truth
    vae = api.load(root / "run")[0]
    codes = vae.embed(data.test, decoder_space=True)
    factors = truth["factors"]["test"]
    r = np.abs(np.corrcoef(factors.T, codes.T)[: factors.shape[1], factors.shape[1] :])
    names = data.names
    pattern = factor_pattern(len(names))
    found, aucs, mixed = 0, [], 0
    for k in range(factors.shape[1]):
        j = int(np.nanargmax(r[k]))
        if r[k, j] < 0.7:
            continue
        found += 1
        record = result["dimensions"][j]
        assert record["used"]
        expected = set(np.asarray(names)[pattern[k]].tolist())
        if np.sort(r[:, j])[-2] < 0.5 and np.sort(r[k])[-2] < 0.5:  # one factor, one dimension: exactly its modalities
            assert set(record["modalities"]) == expected, (k, j, record["modalities"])
        else:  # the dimension also carries another factor, or the factor is split over two dimensions (rotations)
            mixed += 1
        for m in np.flatnonzero(pattern[k]):
            name = names[m]
            loaded = truth["loadings"][name][:, k] != 0
            effects = np.abs(result["feature_effects"][name]["effects"][j])
            aucs.append(roc_auc_score(loaded, effects))
            assert aucs[-1] > 0.85, (k, name)  # a dimension that also carries a little of a neighbouring factor: 0.89
            assert loaded[np.argmax(effects)]  # the top feature is a true one
    assert found >= 5  # of the 6 true factors (25 epochs on 1,600 rows)
    assert np.mean(aucs) > 0.95  # measured 0.98 (random effects would give 0.5)
    # measured: factors 0 and 1 share two dimensions' axes in part (|r| 0.62 beside 0.83), and the weakest private
    # factor is split over two dimensions (0.76 and 0.85), each below the 0.02 R^2 that names a modality
    assert found - mixed >= 2


def test_a_dimension_at_its_prior_explains_nothing(factors_run):
    _, result, done = factors_run
    unused = [d for d in result["dimensions"] if d["kl"] < 0.02]
    assert unused, "the run should leave some of its 10 dimensions at the prior"
    for d in unused:
        j = d["index"]
        assert not d["used"] and d["sharing"] == "none"
        for name, values in result["variance_explained"].items():
            assert abs(values[j]) < 2e-3 and abs(result["variance_explained_leave_one_out"][name][j]) < 2e-3
    assert "used)" in done.stdout and "R^2 alone" in done.stdout


def test_the_label_is_associated_with_the_dimension_of_its_factor(factors_run):
    _, result, _ = factors_run
    label = result["associations"]["label"]  # label = factor 0 > 0
    assert label["test"] == "auc" and label["rows"] == 200
    strongest = int(np.nanargmax(np.abs(np.array(label["statistic"], dtype=float) - 0.5)))
    assert set(result["dimensions"][strongest]["modalities"]) == {"m0", "m1", "m2"}  # factor 0 lives in every modality
    assert abs(label["statistic"][strongest] - 0.5) > 0.3 and label["q"][strongest] < 1e-6


def test_associations_match_scipy_and_control_the_false_discovery_rate():
    rng = np.random.default_rng(2)
    codes = rng.normal(size=(300, 3))
    age = codes[:, 1] * 2 + rng.normal(size=300)
    age[:10] = np.nan  # unknown for ten subjects: left out, not imputed
    site = np.array(["A", "B", "C"], dtype=object)[rng.integers(0, 3, 300)]
    sex = np.where(codes[:, 2] > 0, "F", "M").astype(object)
    sex[5] = ""
    found = associations(codes, {"age": age, "site": site, "sex": sex})
    assert found["age"]["test"] == "spearman" and found["age"]["rows"] == 290
    assert found["age"]["statistic"][1] == pytest.approx(stats.spearmanr(age[10:], codes[10:, 1])[0])
    assert found["sex"]["test"] == "auc" and found["sex"]["rows"] == 299
    keep = np.arange(300) != 5
    assert found["sex"]["statistic"][2] == pytest.approx(roc_auc_score(sex[keep] == "M", codes[keep, 2]))
    assert found["site"]["test"] == "kruskal" and max(found["site"]["q"]) > 0.05  # site is noise
    assert found["age"]["q"][1] < 1e-10 and found["age"]["q"][0] > 0.01


# --- stability -------------------------------------------------------------------------------------------------------


def _explanation(used, effects):
    return {
        "used": used,
        "variance_explained": {"a": [0.5] * len(used), "b": [0.1] * len(used)},
        "feature_effects": {"a": {"features": ["f0", "f1", "f2"], "effects": effects}},
    }


def test_stability_matches_permuted_and_flipped_dimensions():
    rng = np.random.default_rng(3)
    codes = rng.normal(size=(500, 4))
    codes[:, 3] *= 0.01  # an unused dimension
    other = -codes[:, [1, 0, 2, 3]] + 0.1 * rng.normal(size=(500, 4))  # dims 0 and 1 swapped, every sign flipped
    matched, r, signs = match(codes, other, np.array([0, 1, 2]))
    assert matched.tolist() == [1, 0, 2] and (r > 0.9).all() and (signs == -1).all()
    effects = rng.normal(size=(4, 3)).tolist()
    flipped = [[-v for v in effects[k]] for k in (1, 0, 2, 3)]
    result = stability(
        [codes, other], [_explanation([True, True, True, False], effects), _explanation([True] * 3 + [False], flipped)]
    )
    by_index = {d["index"]: d for d in result["dimensions"]}
    assert [by_index[j]["keeps_index"] for j in range(3)] == [False, False, True]
    assert all(d["feature_agreement"] == pytest.approx(1.0) and d["reproduced"] for d in result["dimensions"])
    assert result["summary"]["share_keep_index"] == pytest.approx(1 / 3) and result["summary"]["reproduced"] == 3


def test_stability_command_compares_runs_on_the_same_rows(factors_run, tmp_path):
    root, _, _ = factors_run
    done = _cli("stability", root / "run", root / "run", "--out", tmp_path / "s.json")
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["summary"]["share_keep_index"] == 1.0 and result["summary"]["median_worst_abs_r"] == pytest.approx(
        1.0
    )
    assert _cli("stability", root / "run", "--out", tmp_path / "t.json").returncode != 0


def test_a_rotated_latent_loses_its_dimensions_but_keeps_its_subspace():
    from infinimodal.evaluation.stability import canonical_correlations

    rng = np.random.default_rng(4)
    codes = rng.normal(size=(400, 3))
    angle = np.pi / 4
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    rotated = codes @ rotation
    np.testing.assert_allclose(canonical_correlations(codes, rotated), 1.0, atol=1e-9)
    effects = rng.normal(size=(3, 3)).tolist()
    result = stability([codes, rotated], [_explanation([True] * 3, effects), _explanation([True] * 3, effects)])
    assert result["summary"]["worst_canonical_r"] == pytest.approx(1.0)
    assert (
        sorted(d["worst_abs_r"] for d in result["dimensions"])[0] < 0.75
    )  # each of the rotated pair is only half of one
    # against unrelated codes the subspace does not come back
    assert canonical_correlations(codes, rng.normal(size=(400, 3)))[-1] < 0.2


def test_explain_and_stability_refuse_what_they_cannot_write(factors_run, tmp_path):
    root, _, _ = factors_run
    done = _cli("explain", root / "run", "--out", tmp_path / "e.csv")
    assert done.returncode == 2 and "--out must be a .json file" in done.stderr and not (tmp_path / "e.csv").exists()
    done = _cli("stability", root / "run", root / "run", "--out", tmp_path / "s.txt")
    assert done.returncode == 2 and "--out must be a .json file" in done.stderr
    json.loads((root / "explain.json").read_text())  # strict JSON: NaN is written as null
