"""`infinimodal report` and `infinimodal compare`: every section, decodable figures, numbers checked against
independent computations (scipy quantiles, pandas, the facade's own embeddings), and the page in a browser."""

import base64
import io
import json
import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import stats

from infinimodal import api
from infinimodal.cli import main
from infinimodal.evaluation import encode
from infinimodal.evaluation.curves import read_curves
from infinimodal.evaluation.report import (
    SECTIONS,
    dimension_sweeps,
    latent_usage,
    tsne_map,
    used_dimensions,
)
from infinimodal.latents import build_latent
from infinimodal.stick_breaking import sticks_to_cover

SMALL = ["--epochs", "2", "--hidden", "32", "--batch-size", "50", "--quiet"]
EMBEDDED = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _two_modality_file(path):
    """An 8x8 binary image and 4 tabular features of the same 3-class subjects, with a modality missing in
    a fifth of the rows each (never both)."""
    rng = np.random.default_rng(0)
    n = 400
    labels = rng.integers(0, 3, n)
    patterns = rng.random((3, 64)) < 0.5
    image = (rng.random((n, 64)) < np.where(patterns[labels], 0.9, 0.1)).astype(np.float32)
    table = (rng.normal(size=(3, 4))[labels] + 0.3 * rng.normal(size=(n, 4))).astype(np.float32)
    missing = rng.random(n)
    image[missing < 0.2] = np.nan
    table[missing > 0.8] = np.nan
    np.savez(path, img=image, tab=table, labels=labels)
    return path


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """Beta sticks, MoPoE, an image and a tabular modality with missing rows; evaluated, then reported."""
    folder = tmp_path_factory.mktemp("report")
    data = _two_modality_file(folder / "subjects.npz")
    out = folder / "beta"
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--latent",
                "beta",
                "--truncation",
                "8",
                "--aggregator",
                "mopoe",
                *SMALL,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert main(["evaluate", str(out), "--iw-samples", "4", "--no-coherence", "--quiet"]) == 0
    assert main(["report", str(out), "--quiet", "--max-rows", "200"]) == 0
    return out


@pytest.fixture(scope="module")
def gaussian_run(tmp_path_factory):
    """Gaussian latents, PoE, three tabular modalities, no missing rows, not evaluated."""
    out = tmp_path_factory.mktemp("report") / "gaussian"
    spec = "synthetic:modalities=3,shared=2,private=1,features=5,n=300"
    assert (
        main(
            [
                "train",
                "--data",
                spec,
                "--latent",
                "gaussian",
                "--latent-dim",
                "6",
                "--aggregator",
                "poe",
                *SMALL,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert main(["report", str(out), "--quiet"]) == 0
    return out


def _embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in EMBEDDED.findall(page)]


def _check_png(blob: bytes) -> np.ndarray:
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(blob))
    image.load()
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50 and pixels.std() > 5, "a blank or tiny figure"
    return pixels


def test_report_has_every_section_and_every_figure_is_an_embedded_png(image_run):
    page = (image_run / "report.html").read_text()
    for key, title in SECTIONS:
        assert f'<section id="{key}">' in page and f"<h2>{title}</h2>" in page
    files = sorted((image_run / "figures").glob("*.png"))
    names = {f.stem for f in files}
    explained = json.loads((image_run / "explain.json").read_text())  # the explanation section's table, in full
    drawn = (
        {"variance_explained"} if explained["n_used"] else set()
    )  # the figure of the used dimensions, when there are any
    assert (
        names
        == {
            "curves",
            "maps",
            "stick_usage",
            "sticks_99",
            "per_dimension_img",
            "per_dimension_tab",
            "reconstruction",
            "given_img",
            "given_tab",
            "imputation",
            "deviation_scores",
            "prior_samples",
        }
        | drawn
    )
    assert ("explains" in page) == bool(explained["n_used"]) and "What each dimension does" in page
    embedded = _embedded_pngs(page)
    assert sorted(embedded) == sorted(f.read_bytes() for f in files), (
        "each figure is embedded once, byte for byte the PNG file"
    )
    for blob in embedded:
        _check_png(blob)
    assert "http://" not in page and "https://" not in page and "<script" not in page  # self-contained
    assert "No eval.json" not in page and "test log p(x)" in page  # the metrics of eval.json are shown
    assert "has no missing modalities" not in page


def test_report_of_a_gaussian_run_without_evaluation_or_missing_rows_says_so(gaussian_run):
    page = (gaussian_run / "report.html").read_text()
    for key, _ in SECTIONS:
        assert f'<section id="{key}">' in page
    assert f"infinimodal evaluate {gaussian_run}" in page  # how to get the metrics
    assert "The test set has no missing modalities" in page
    names = {f.stem for f in (gaussian_run / "figures").glob("*.png")}
    assert "sticks_99" not in names and "imputation" not in names  # nothing to show, and said so
    assert {"stick_usage", "maps", "per_dimension_x0", "given_x2", "prior_samples"} <= names
    for blob in _embedded_pngs(page):
        _check_png(blob)


def test_a_report_run_again_replaces_its_figures(image_run):
    stale = image_run / "figures" / "from_an_older_model.png"
    shutil.copy(image_run / "figures" / "maps.png", stale)
    assert main(["report", str(image_run), "--quiet", "--max-rows", "200"]) == 0
    assert not stale.exists()


def test_commands_log_to_the_run_directory(image_run):
    lines = (image_run / "infinimodal.log").read_text()
    assert "evaluated in" in lines and "report written" in lines
    # one line per epoch, with that epoch's training and validation means as metrics.csv has them
    epochs, curves = read_curves(image_run / "metrics.csv")
    for epoch in epochs:
        line = re.search(rf"epoch {epoch}: (.*)", lines).group(1)
        logged = {k: float(v) for k, v in (item.split(" ") for item in line.split(", "))}
        for key in ("train_elbo", "val_elbo", "kl_weight"):
            assert logged[key] == pytest.approx(curves[key][epoch - 1], abs=1e-3)
    logger = __import__("logging").getLogger("infinimodal")
    assert logger.handlers == [] and logger.level == 0  # nothing left attached after the commands


def test_report_of_odd_inputs(tmp_path):
    """RGB images, a categorical modality, a mixture (MoE) posterior, 3 test rows (too few for a map), one of
    them missing a modality, in a directory whose name needs HTML escaping."""
    rng = np.random.default_rng(1)
    n = 200
    labels = rng.integers(0, 3, n)
    rgb = np.clip(rng.random((3, 3, 8, 8))[labels] + 0.1 * rng.normal(size=(n, 3, 8, 8)), 0, 1).astype(np.float32)
    category = np.eye(3, dtype=np.float32)[labels]
    category[-1] = np.nan
    split = np.array(["train"] * 180 + ["valid"] * 17 + ["test"] * 3)
    np.savez(tmp_path / "odd.npz", rgb=rgb, cat=category, labels=labels, split=split)
    out = tmp_path / "a&<b"
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "odd.npz"),
                "--likelihood",
                "cat=categorical",
                "--latent",
                "beta",
                "--truncation",
                "5",
                "--aggregator",
                "moe",
                *SMALL,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert main(["report", str(out), "--quiet"]) == 0
    page = (out / "report.html").read_text()
    assert "a&amp;&lt;b" in page and "a&<b" not in page
    assert page.count("No map of the") == 3  # joint, rgb (3 rows), cat (2 rows)
    assert "too few to be a reference population" in page  # 17 validation rows
    names = {f.stem for f in (out / "figures").glob("*.png")}
    drawn = {"variance_explained"} if json.loads((out / "explain.json").read_text())["n_used"] else set()
    assert (
        names
        == {
            "curves",
            "stick_usage",
            "sticks_99",
            "per_dimension_rgb",
            "per_dimension_cat",
            "reconstruction",
            "given_rgb",
            "given_cat",
            "class_cat_rgb",
            "imputation",
            "prior_samples",
            "class_errors",
        }
        | drawn
    )
    for blob in _embedded_pngs(page):
        _check_png(blob)


def test_progress_bars_show_unless_quiet(gaussian_run, capfd):
    assert main(["report", str(gaussian_run), "--max-rows", "60"]) == 0
    shown = capfd.readouterr().err
    assert "report:" in shown and "t-SNE" in shown
    assert main(["report", str(gaussian_run), "--max-rows", "60", "--quiet"]) == 0
    assert capfd.readouterr().err == ""


def test_report_errors_name_the_problem(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a finished run directory" in capsys.readouterr().err


# --- the numbers behind the figures -------------------------------------------------------------------------


def test_curves_are_the_last_value_logged_in_each_epoch(image_run):
    epochs, curves = read_curves(image_run / "metrics.csv")
    table = pd.read_csv(image_run / "metrics.csv")
    expected = table.groupby("epoch").agg(lambda column: column.dropna().iloc[-1] if column.notna().any() else np.nan)
    assert list(epochs) == [e + 1 for e in expected.index]
    for key in (
        "train_elbo",
        "train_reconstruction",
        "train_kl",
        "val_elbo",
        "val_reconstruction",
        "val_kl",
        "kl_weight",
    ):
        np.testing.assert_allclose(curves[key], expected[key].to_numpy())
    # the ELBO is reconstruction minus KL, epoch by epoch
    np.testing.assert_allclose(curves["val_elbo"], curves["val_reconstruction"] - curves["val_kl"], rtol=1e-4)


@pytest.mark.parametrize("family", ["beta", "logitnormal", "gaussian"])
def test_dimension_sweeps_move_only_the_chosen_dimensions_at_the_prior_quantiles(family):
    settings = {"latent_dim": 6} if family == "gaussian" else {"truncation": 7, "alpha": 3.0}
    latent = build_latent(family, **settings)
    n = 5
    alone, first = dimension_sweeps(latent, [1, 4], [0, 2, 3], n=n, seed=0)
    assert alone.shape == (2, n, 6) and first.shape == (3, n, 6)
    levels = np.linspace(0.05, 0.95, n)
    if family == "gaussian":
        quantile, median = stats.norm.ppf(levels), 0.0
    elif family == "beta":
        quantile, median = stats.beta.ppf(levels, 1.0, 3.0), stats.beta.median(1.0, 3.0)
    else:  # the logit-normal family's latent is the logit: N(loc, scale^2), the Beta(1, alpha)-matched parameters
        loc, scale = float(latent.prior_loc[0]), float(latent.prior_scale[0])
        quantile, median = stats.norm.ppf(levels, loc, scale), loc
    alone, first = alone.double().numpy(), first.double().numpy()
    tolerance = 0.03 * (float(latent.prior_scale[0]) if family == "logitnormal" else 1.0)  # Monte Carlo quantiles
    for r, d in enumerate([1, 4]):
        np.testing.assert_allclose(alone[r, :, d], quantile, atol=tolerance)
        others = np.delete(alone[r], d, axis=1)
        np.testing.assert_allclose(others, median, atol=tolerance)
    for r, chosen in enumerate([[0], [0, 2], [0, 2, 3]]):
        rest = [d for d in range(6) if d not in chosen]
        np.testing.assert_allclose(first[r][:, rest], median, atol=tolerance)
        np.testing.assert_array_equal(first[r][:, chosen], first[-1][:, chosen])  # the same draws in every row
    assert np.unique(first[-1][:, 0]).size == n  # dimension 0 is drawn, not fixed


def test_used_dimensions_follow_kl_and_sticks_99():
    kl = np.array([[0.01, 2.0, 0.0, 0.5, 0.2, 3.0]] * 4)
    weights = np.array([[0.5, 0.3, 0.15, 0.04, 0.005, 0.004, 0.001]] * 4)  # 99 % in the first 4 sticks
    alone, first, why = used_dimensions(True, {"kl_per_dim": kl, "weights": weights}, max_dims=3)
    assert alone == [1, 3, 5] and first == [0, 1, 2]  # 3 of the 4 active by largest KL; first k capped at 3
    alone, first, _ = used_dimensions(True, {"kl_per_dim": kl, "weights": weights}, max_dims=16)
    assert alone == [1, 3, 4, 5] and first == [0, 1, 2, 3]
    assert int(sticks_to_cover(torch.tensor(weights), 0.99)[0]) == 4
    alone, first, _ = used_dimensions(False, {"kl_per_dim": kl}, max_dims=16)
    assert alone == [1, 3, 4, 5] and first == [5, 1, 3, 4]  # Gaussians: KL-active dimensions by decreasing KL


def test_stick_usage_per_modality_uses_only_the_rows_where_it_is_observed(image_run):
    vae, config = api.load(image_run)
    data = api.load_data(config, progress=False)
    test = data.test
    codes = encode(vae.module, test, [None, (0,), (1,)])
    kl, weights, counts = latent_usage(codes[0], codes[1:], vae.names, stick=True)
    assert set(weights) == {"joint", "img", "tab"}
    for m, name in enumerate(vae.names):
        observed = test.mask[:, m]
        assert (~observed).any()  # the test rows do miss each modality sometimes
        # written out without the evaluation code: given one modality, MoPoE's posterior is that modality's Beta,
        # evidence exp(head output) (clamped at exp(15)); E[pi] by plain products, averaged over its observed rows
        with torch.no_grad():
            x = torch.from_numpy(np.asarray(test.arrays[name][observed], dtype=np.float32))
            raw = vae.module.heads[f"mod_{name}"](vae.module.encoders[f"mod_{name}"](x)).double().numpy()
        e_a, e_b = np.exp(np.minimum(np.split(raw, 2, axis=1), 15.0))
        mean_v = (1 + e_a) / (1 + e_a + config.alpha + e_b)
        ones = np.ones((len(mean_v), 1))
        expected = np.concatenate([mean_v, ones], axis=1) * np.concatenate(
            [ones, np.cumprod(1 - mean_v, axis=1)], axis=1
        )
        np.testing.assert_allclose(weights[name], expected.mean(0), rtol=1e-5, atol=1e-7)
        assert len(counts[name]) == observed.sum()
    np.testing.assert_allclose(weights["joint"].sum(), 1.0, rtol=1e-5)


def test_tsne_keeps_separated_groups_apart():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 20)) * 10
    labels = np.repeat(np.arange(3), 60)
    points = centres[labels] + rng.normal(size=(180, 20))
    coords = tsne_map(points, progress=False)
    assert coords.shape == (180, 2) and np.isfinite(coords).all()
    from sklearn.neighbors import KNeighborsClassifier

    assert KNeighborsClassifier(5).fit(coords, labels).score(coords, labels) == 1.0


# --- compare -------------------------------------------------------------------------------------------


def test_compare_puts_runs_side_by_side(image_run, gaussian_run, tmp_path, capsys):
    out = tmp_path / "both.html"
    assert main(["compare", str(image_run), str(gaussian_run), "--out", str(out), "--quiet"]) == 0
    page = out.read_text()
    for section in ("runs", "validation", "metrics", "curves", "side-by-side"):
        assert f'<section id="{section}">' in page
    assert "<th>beta</th>" in page and "<th>gaussian</th>" in page
    assert "trained on different data" in page and "gaussian has no eval.json" in page
    assert '<section id="stability">' not in page  # dimensions of models of different data are not matched
    assert (tmp_path / "both_figures" / "curves.png").is_file()
    blobs = _embedded_pngs(page)
    assert len(blobs) == 3 + 2 * 5  # curves, KL spectra, sticks_99 (the beta run), then five figures per run
    for blob in blobs:
        _check_png(blob)


def test_compare_bolds_the_better_run(image_run, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(image_run, twin)
    result = json.loads((twin / "eval.json").read_text())
    result["elbo"] += 1.0  # the twin is better on ELBO, worse on kNN error
    result["knn_error"] = {k: v + 0.1 for k, v in result["knn_error"].items()}
    result["iw_samples"] *= 2
    (twin / "eval.json").write_text(json.dumps(result))
    out = tmp_path / "twins.html"
    assert main(["compare", str(image_run), str(twin), "--out", str(out), "--quiet"]) == 0
    # the twin's report predates its new eval.json: compare wrote it again
    assert (twin / "report.html").stat().st_mtime >= (twin / "eval.json").stat().st_mtime
    assert "test ELBO (the mopoe bound)</td><td>" + f"{result['elbo']:.4g}" in (twin / "report.html").read_text()
    page = out.read_text()
    row = re.search(r"<tr><td>elbo</td><td>([^<]*(?:<b>)?[^<]*)(?:</b>)?</td><td>(<b>)?", page)
    assert row is not None and row.group(2) == "<b>"  # the twin's ELBO is the bold one
    knn = re.search(r"<tr><td>knn_error / 3</td><td>(<b>)?", page)
    assert knn.group(1) == "<b>"  # the original's kNN error is the bold one
    assert "different numbers of importance samples" in page and "different numbers of test rows" not in page
    # the same weights twice: every used dimension comes back at its own index (or none is used, and the page says so)
    assert '<section id="stability">' in page
    assert "share keeping their index 1" in page or "uses no dimension" in page


def test_compare_ranks_the_models_imputation_errors_not_their_baselines_or_row_counts():
    from infinimodal.evaluation.compare import _ranked_rows

    first = {
        "imputation_mse / x / rows": 120,
        "imputation_mse / x / model": 0.5,
        "imputation_mse / x / model_all_rows": 0.6,
        "imputation_mse / x / ridge": 0.7,
        "imputation_mse / x / mean": 1.0,
        "prediction_error / y / all": 0.1,
    }
    second = {
        "imputation_mse / x / rows": 80,
        "imputation_mse / x / model": 0.4,
        "imputation_mse / x / model_all_rows": 0.7,
        "imputation_mse / x / ridge": 0.7,
        "imputation_mse / x / mean": 1.0,
        "prediction_error / y / all": 0.2,
    }
    rows, bold = _ranked_rows([first, second], [{"aggregator": "mopoe"}] * 2)
    bolded = {rows[r][0]: c for r, c in bold}
    assert bolded == {
        "imputation_mse / x / model": 2,
        "imputation_mse / x / model_all_rows": 1,
        "prediction_error / y / all": 1,
    }


def test_compare_does_not_rank_elbos_of_different_aggregators(image_run, tmp_path):
    twin = tmp_path / "poe_twin"
    shutil.copytree(image_run, twin)
    config = json.loads((twin / "config.json").read_text())
    config["aggregator"] = "poe"  # the same weights read as a PoE model: its ELBO is another bound
    (twin / "config.json").write_text(json.dumps(config))
    result = json.loads((twin / "eval.json").read_text())
    result["elbo"] += 1.0
    result["log_likelihood"] += 1.0
    (twin / "eval.json").write_text(json.dumps(result))
    out = tmp_path / "aggregators.html"
    assert main(["compare", str(image_run), str(twin), "--out", str(out), "--quiet"]) == 0
    page = out.read_text()
    elbo = re.search(r"<tr><td>elbo</td>(.*?)</tr>", page).group(1)
    assert "<b>" not in elbo and "ELBO is its own bound" in page
    assert "<b>" in re.search(r"<tr><td>log_likelihood</td>(.*?)</tr>", page).group(1)  # a bound on the same log p(X)


def test_compare_needs_two_runs_and_an_html_file(image_run, tmp_path, capsys):
    assert main(["compare", str(image_run), "--out", str(tmp_path / "one.html")]) == 2
    assert "at least two run directories" in capsys.readouterr().err
    assert main(["compare", str(image_run), str(image_run), "--out", str(tmp_path / "page.png")]) == 2
    assert "must be an .html file" in capsys.readouterr().err


# --- in a real browser ------------------------------------------------------------------------------------


def _chromium() -> str:
    path = os.environ.get("INFINIMODAL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(
            "Chromium is missing: `make test` installs the Debian package chromium (or set INFINIMODAL_CHROMIUM)"
        )
    return path


def _open_in_browser(page_path, screenshot_path):
    from playwright.sync_api import sync_playwright

    problems = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=_chromium(),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console",
                lambda message: (
                    problems.append(f"console {message.type}: {message.text}")
                    if message.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url}"))
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            images = page.evaluate(
                "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width])"
            )
            headings = page.evaluate(
                "Array.from(document.querySelectorAll('h2')).map(h => [h.textContent, h.getBoundingClientRect().height])"
            )
            page.screenshot(path=str(screenshot_path), full_page=True)
        finally:
            browser.close()
    return images, headings, problems


@pytest.mark.parametrize("which", ["report", "compare"])
def test_pages_render_in_headless_chromium(which, image_run, gaussian_run, tmp_path):
    if which == "report":
        page_path = image_run / "report.html"
        titles = [title for _, title in SECTIONS]
    else:
        page_path = tmp_path / "compare.html"
        assert main(["compare", str(image_run), str(gaussian_run), "--out", str(page_path), "--quiet"]) == 0
        titles = [
            "Runs",
            "Validation: what to choose on",
            "Test metrics",
            "Training curves and latent usage",
            "Figures side by side",
        ]
    shot = tmp_path / "screenshot.png"
    images, headings, problems = _open_in_browser(page_path, shot)
    assert problems == []
    expected = len(EMBEDDED.findall(page_path.read_text()))
    assert len(images) == expected > 0
    assert all(complete and width > 0 and height > 0 and shown > 0 for complete, width, height, shown in images), images
    assert [text for text, _ in headings] == titles and all(height > 0 for _, height in headings)
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert pixels.shape[0] > 900  # the whole page, longer than one screen
    assert (
        pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 100
    )  # not blank: text, figures, colour


def test_an_image_grid_of_a_modality_that_is_not_an_image_is_refused_by_name(tmp_path):
    from infinimodal.evaluation.plots import image_grid_figure
    from infinimodal.modality import Modality

    with pytest.raises(ValueError, match="'clinical' is not an image modality"):
        image_grid_figure(Modality("clinical", (5,), "gaussian"), np.zeros((4, 5)), tmp_path / "grid.png")
