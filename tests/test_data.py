import gzip
import shutil
import struct

import numpy as np
import pytest

from infinimodal.data import FallbackWarning, load_mnist, read_idx
from infinimodal.data import mnist as mnist_module
from infinimodal.errors import DataError


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_mnist(directory, n_train=60, n_test=10):
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(directory / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, n_train))
    write_idx(directory / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, n_test))
    return directory


def test_read_idx_roundtrip(tmp_path):
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 256
    write_idx(tmp_path / "a.gz", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), array)


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    with gzip.open(tmp_path / "bad.gz", "wb") as f:
        f.write(b"\x00\x00\x09\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(DataError, match="bad.gz.*magic"):
        read_idx(tmp_path / "bad.gz")
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"abc")
    with pytest.raises(DataError, match="short.gz holds 3 bytes.*promises 5"):
        read_idx(tmp_path / "short.gz")
    (tmp_path / "notgzip.gz").write_bytes(b"plain text")
    with pytest.raises(DataError, match="notgzip.gz"):
        read_idx(tmp_path / "notgzip.gz")


def test_real_mnist_splits(mnist_dir):
    data = load_mnist(mnist_dir)
    assert data.train.images.shape == (50_000, 784)
    assert data.valid.images.shape == (10_000, 784)
    assert data.test.images.shape == (10_000, 784)
    assert data.train.images.dtype == np.float32 and 0 <= data.train.images.min() and data.train.images.max() <= 1
    assert set(np.unique(data.test.labels)) == set(range(10))


def test_search_order_explicit_then_env_then_cache(tmp_path, monkeypatch):
    explicit = fake_mnist(tmp_path / "explicit", n_train=60)
    env_root = tmp_path / "env"
    fake_mnist(env_root / "mnist", n_train=72)
    cache_root = tmp_path / "cache"
    fake_mnist(cache_root / "mnist", n_train=84)
    monkeypatch.setenv("INFINIMODAL_DATA", str(env_root))
    monkeypatch.setenv("INFINIMODAL_CACHE", str(cache_root))
    assert load_mnist(explicit).source == str(explicit)
    assert load_mnist().source == str(env_root / "mnist")
    monkeypatch.delenv("INFINIMODAL_DATA")
    assert load_mnist().source == str(cache_root / "mnist")
    n = 84
    data = load_mnist()
    assert len(data.train.images) + len(data.valid.images) == n  # nothing dropped


def test_explicit_path_missing_files_is_an_error(tmp_path):
    with pytest.raises(DataError, match="lacks train-images-idx3-ubyte.gz"):
        load_mnist(tmp_path)


def test_download_from_a_mirror_verifies_checksums(tmp_path, mnist_dir, monkeypatch):
    mirror = tmp_path / "mirror"
    shutil.copytree(mnist_dir, mirror)
    monkeypatch.delenv("INFINIMODAL_DATA", raising=False)
    monkeypatch.setenv("INFINIMODAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("INFINIMODAL_OFFLINE", "0")
    monkeypatch.setattr(mnist_module, "MIRRORS", ())
    monkeypatch.setenv("INFINIMODAL_MNIST_URL", mirror.as_uri() + "/")
    data = load_mnist()
    assert data.source == str(tmp_path / "cache" / "mnist")
    assert data.train.images.shape == (50_000, 784)


def test_corrupt_download_is_rejected(tmp_path, monkeypatch):
    mirror = fake_mnist(tmp_path / "mirror")  # right names, wrong contents
    with pytest.raises(DataError, match="checksum mismatch"):
        mnist_module.download(tmp_path / "cache", mirrors=(mirror.as_uri() + "/",))
    assert not any((tmp_path / "cache").iterdir())  # no partial or wrong file is left behind


def test_fallback_to_packaged_subset_warns(tmp_path, monkeypatch):
    monkeypatch.delenv("INFINIMODAL_DATA", raising=False)
    monkeypatch.setenv("INFINIMODAL_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("INFINIMODAL_OFFLINE", "1")
    with pytest.warns(FallbackWarning, match="5,000-digit subset"):
        data = load_mnist()
    assert len(data.train.images) + len(data.valid.images) + len(data.test.images) == 5000
    assert data.train.images.shape[1] == 784 and data.train.images.max() <= 1.0
    # shuffled before splitting: every split holds every class
    for split in (data.train, data.valid, data.test):
        assert set(np.unique(split.labels)) == set(range(10))


# --- multimodal data sets ----------------------------------------------------------------------------


from infinimodal.data import load_dataset  # noqa: E402
from infinimodal.data.cache import cache_root  # noqa: E402
from infinimodal.data.images import rotate, texture  # noqa: E402


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    """A 200-image fake MNIST, and a private cache."""
    monkeypatch.setenv("INFINIMODAL_CACHE", str(tmp_path / "cache"))
    return fake_mnist(tmp_path / "mnist", n_train=200, n_test=40)


def test_polymnist_rows_share_a_label_and_show_different_digits_on_unique_textures(tiny_mnist):
    data = load_dataset("polymnist:3", data_dir=str(tiny_mnist), progress=False)
    assert data.names == ["m0", "m1", "m2"] and all(
        m.shape == (3, 28, 28) and m.likelihood == "laplace" for m in data.modalities
    )
    raw = load_mnist(tiny_mnist)
    folder = next((cache_root() / "polymnist").iterdir())
    for split_name, part in (("train", raw.train), ("test", raw.test)):
        split = data.split(split_name)
        np.testing.assert_array_equal(split.labels, part.labels)
        digits = part.images.reshape(-1, 28, 28) > 0.5
        for m in range(3):
            source = np.load(folder / f"{split_name}__m{m}_source.npy")  # partner row, crop top, crop left
            partner, top, left = source.T
            assert (part.labels[partner] == part.labels).all()  # same digit class in every modality
            if m:
                assert (partner != np.arange(len(partner)))[np.bincount(part.labels)[part.labels] > m].all()
            # the binarised digit colour-inverts a crop of modality m's texture, exactly
            background = texture(m)
            for i in range(0, len(partner), 37):
                crop = background[:, top[i] : top[i] + 28, left[i] : left[i] + 28]
                expected = np.round(np.where(digits[partner[i]][None], 1 - crop, crop) * 255).astype(np.uint8)
                np.testing.assert_array_equal(split.arrays[f"m{m}"][i], expected)
    textures = [texture(m) for m in range(16)]
    for a in range(16):
        for b in range(a + 1, 16):
            assert np.abs(textures[a] - textures[b]).mean() > 0.05  # every modality has its own background


def test_polymnist_is_cached_and_seeded(tiny_mnist, capsys):
    first = load_dataset("polymnist:2", data_dir=str(tiny_mnist), progress=True)
    assert "building polymnist" in capsys.readouterr().out
    again = load_dataset("polymnist:2", data_dir=str(tiny_mnist), progress=True)
    assert "building" not in capsys.readouterr().out  # read back from the cache
    np.testing.assert_array_equal(first.train.arrays["m1"], again.train.arrays["m1"])
    other = load_dataset("polymnist:2", data_dir=str(tiny_mnist), seed=1, progress=False)
    assert not np.array_equal(first.train.arrays["m1"], other.train.arrays["m1"])
    with pytest.raises(DataError, match="2 <= M <= 16"):
        load_dataset("polymnist:17", data_dir=str(tiny_mnist))
    with pytest.raises(DataError, match="polymnist:M"):
        load_dataset("polymnist:five", data_dir=str(tiny_mnist))


def test_rotation_matches_numpy_quarter_turns():
    image = np.zeros((1, 28, 28), np.float32)
    image[0, 2:6, 10:18] = 1
    np.testing.assert_allclose(rotate(image, np.array([90.0]))[0], np.rot90(image[0], -1), atol=1e-5)
    np.testing.assert_allclose(rotate(image, np.array([-90.0]))[0], np.rot90(image[0], 1), atol=1e-5)
    np.testing.assert_allclose(rotate(image, np.array([0.0]))[0], image[0], atol=1e-6)


def test_noisy_mnist_views(tiny_mnist):
    data = load_dataset("noisy-mnist", data_dir=str(tiny_mnist), progress=False)
    assert data.names == ["view1", "view2"]
    raw = load_mnist(tiny_mnist)
    folder = next((cache_root() / "noisy-mnist").iterdir())
    angles = np.load(folder / "train__angles.npy")
    partner = np.load(folder / "train__partner.npy")
    assert angles.min() >= -45 and angles.max() <= 45 and angles.std() > 15  # U(-45, 45)
    images = raw.train.images.reshape(-1, 28, 28)
    view1 = data.train.arrays["view1"][:, 0] / 255.0
    np.testing.assert_allclose(view1, rotate(images, angles), atol=0.5 / 255 + 1e-6)
    view2 = data.train.arrays["view2"][:, 0] / 255.0
    assert (raw.train.labels[partner] == raw.train.labels).all() and (partner != np.arange(len(partner))).any()
    noise = view2 - images[partner]
    assert noise.min() >= -0.5 / 255 - 1e-6  # noise is non-negative, then clipped at 1
    dark = images[partner] == 0  # where the digit is 0 the noise is never clipped: it is U(0, 1) itself
    assert dark.sum() > 100 and 0.4 < noise[dark].mean() < 0.6 and noise[dark].max() <= 1.0


def test_synthetic_data_carry_their_truth():
    data = load_dataset("synthetic:modalities=4,shared=2,private=3,features=7,n=500,missing=0.3,seed=5")
    assert data.names == ["x0", "x1", "x2", "x3"] and all(m.shape == (7,) for m in data.modalities)
    assert data.truth["true_dims"] == 2 + 4 * 3
    assert len(data.train) + len(data.valid) + len(data.test) == 500
    for split in ("train", "valid", "test"):
        part = data.split(split)
        assert part.mask.any(axis=1).all()  # every row keeps a modality
        assert data.truth["shared_factors"][split].shape == (len(part), 2)
        assert (part.arrays["x1"][~part.mask[:, 1]] == 0).all()
    assert 0.55 < data.train.mask.mean() < 0.85
    # standardised with the observed training rows' statistics alone: exactly mean 0 and SD 1 there, not on the test rows
    observed = data.train.arrays["x1"][data.train.mask[:, 1]]
    np.testing.assert_allclose(observed.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(observed.std(0), 1.0, atol=1e-4)
    test_rows = data.test.arrays["x1"][data.test.mask[:, 1]]
    assert np.abs(test_rows.mean(0)).max() > 1e-3
    assert set(np.unique(data.train.labels)) <= set(range(4))
    again = load_dataset("synthetic:modalities=4,shared=2,private=3,features=7,n=500,missing=0.3,seed=5")
    np.testing.assert_array_equal(data.train.arrays["x2"], again.train.arrays["x2"])
    with pytest.raises(DataError, match="settings are"):
        load_dataset("synthetic:modalities=3,latent=4")
    with pytest.raises(DataError, match="missing"):
        load_dataset("synthetic:missing=1.5")


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_npz_missing_rows_inferred_likelihoods_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    counts = rng.poisson(3.0, (n, 5)).astype(float)
    binary = (rng.random((n, 6)) < 0.5).astype(float)
    real = rng.standard_normal((n, 2, 3))
    counts[[3, 7]] = np.nan
    real[[7, 11, 12]] = np.nan
    labels = np.array(["cat", "dog"] * 20)
    path = write_npz(
        tmp_path / "d.npz", counts=counts, binary=binary, real=real, labels=labels, group=rng.integers(0, 3, n)
    )
    data = load_dataset(str(path), likelihoods={"group": "categorical"})
    likelihoods = {m.name: (m.likelihood, m.shape) for m in data.modalities}
    assert likelihoods == {
        "counts": ("poisson", (5,)),
        "binary": ("bernoulli", (6,)),
        "real": ("gaussian", (2, 3)),
        "group": ("categorical", (3,)),
    }
    assert len(data.train) + len(data.valid) + len(data.test) == n  # nothing dropped
    from infinimodal.data import read_table

    _, table, _ = read_table(path, {"group": "categorical"})
    names = [m.name for m in data.modalities]
    assert not table.mask[3, names.index("counts")] and not table.mask[7].tolist()[names.index("real")]
    assert table.mask.sum() == 4 * n - 5
    assert np.isfinite(table.arrays["counts"]).all() and (table.arrays["counts"][3] == 0).all()
    assert set(np.unique(table.labels)) == {0, 1}
    assert (table.arrays["group"].sum(1) == 1).all()


def test_npz_errors_name_the_modality_the_file_and_the_rows(tmp_path):
    good = np.zeros((12, 3))
    partial = good.copy()
    partial[4, 1] = np.nan
    with pytest.raises(DataError, match=r"modality 'a' in .*bad1.npz: rows 4 have some values missing"):
        load_dataset(str(write_npz(tmp_path / "bad1.npz", a=partial, b=good)))
    empty_a, empty_b = good.copy(), good.copy()
    empty_a[[2, 9]] = np.nan
    empty_b[[2, 9]] = np.nan
    with pytest.raises(DataError, match=r"bad2.npz: rows 2, 9 have no modality at all"):
        load_dataset(str(write_npz(tmp_path / "bad2.npz", a=empty_a, b=empty_b)))
    with pytest.raises(DataError, match=r"modality 'b' in .*bad3.npz: 11 rows, but 'a' has 12"):
        load_dataset(str(write_npz(tmp_path / "bad3.npz", a=good, b=good[:11])))
    negative = np.abs(good) + 1
    negative[5, 0] = -1
    with pytest.raises(
        DataError, match=r"modality 'a' in .*bad4.npz: poisson data must be non-negative integers; rows 5"
    ):
        load_dataset(str(write_npz(tmp_path / "bad4.npz", a=negative, b=good)), likelihoods={"a": "poisson"})
    infinite = good.copy()
    infinite[1, 2] = np.inf
    with pytest.raises(DataError, match=r"rows 1 hold infinite values"):
        load_dataset(str(write_npz(tmp_path / "bad5.npz", a=infinite, b=good)))
    with pytest.raises(DataError, match=r"likelihoods given for c"):
        load_dataset(str(write_npz(tmp_path / "ok.npz", a=good, b=good)), likelihoods={"c": "poisson"})
    with pytest.raises(DataError, match="unknown data"):
        load_dataset("nothing-like-this")
    # a pandas column of dtype object saved as it is: the array, and how to save it instead
    np.savez(tmp_path / "objects.npz", a=good, sex=np.array(["F", None, 3] * 4, dtype=object))
    with pytest.raises(
        DataError, match=r"objects.npz: array 'sex' holds Python objects .*np.asarray\(values, dtype=str\)"
    ):
        load_dataset(str(tmp_path / "objects.npz"))


def test_npz_split_column_is_honoured(tmp_path):
    split = np.array(["train"] * 6 + ["valid"] * 2 + ["test"] * 2)
    path = write_npz(tmp_path / "s.npz", a=np.arange(30.0).reshape(10, 3), split=split)
    data = load_dataset(str(path))
    assert (len(data.train), len(data.valid), len(data.test)) == (6, 2, 2)
    np.testing.assert_array_equal(data.test.arrays["a"][:, 0], [24.0, 27.0])


def test_h5mu_modalities_with_missing_cells(tmp_path):
    import anndata  # the h5mu extra is part of the dev install, so this test always runs
    import mudata

    rng = np.random.default_rng(0)
    rna = anndata.AnnData(rng.poisson(2.0, (30, 8)).astype(np.float32))
    rna.obs_names = [f"cell{i}" for i in range(30)]
    rna.var_names = [f"gene{j}" for j in range(8)]
    atac = anndata.AnnData((rng.random((20, 5)) < 0.3).astype(np.float32))
    atac.obs_names = [f"cell{i}" for i in range(10, 30)]  # the first ten cells have no ATAC
    atac.var_names = [f"peak{j}" for j in range(5)]
    mdata = mudata.MuData({"rna": rna, "atac": atac})
    mdata.obs["labels"] = ["a", "b", "c"] * 10
    path = tmp_path / "cells.h5mu"
    mdata.write(path)
    from infinimodal.data import read_table

    modalities, table, _ = read_table(path)
    assert {m.name: m.likelihood for m in modalities} == {"rna": "poisson", "atac": "bernoulli"}
    names = [m.name for m in modalities]
    order = list(mdata.obs_names)
    atac_observed = table.mask[:, names.index("atac")]
    assert atac_observed.sum() == 20
    assert not any(atac_observed[order.index(f"cell{i}")] for i in range(10))
    row = order.index("cell15")
    np.testing.assert_array_equal(table.arrays["atac"][row], atac[atac.obs_names == "cell15"].X[0])
    assert len(np.unique(table.labels)) == 3


def test_rotated_mnist_turns_the_digits_about_their_centre(mnist_dir):
    from infinimodal.data import load_dataset

    upright, rotated = load_dataset("mnist", str(mnist_dir)), load_dataset("mnist-rotated", str(mnist_dir))
    assert [len(upright.split(s)) for s in ("train", "valid", "test")] == [
        len(rotated.split(s)) for s in ("train", "valid", "test")
    ]
    np.testing.assert_array_equal(upright.test.labels, rotated.test.labels)
    rows = np.arange(28)[:, None] - 13.5

    def spreads(images):
        """Mean squared distance of the ink from the centre along the rows and along the columns."""
        ink = images.reshape(-1, 28, 28).astype(np.float64)
        total = ink.sum(axis=(1, 2))
        return (ink * rows**2).sum(axis=(1, 2)) / total, (ink * rows.T**2).sum(axis=(1, 2)) / total

    up_rows, up_cols = spreads(upright.test.arrays["image"][:2000])
    rot_rows, rot_cols = spreads(rotated.test.arrays["image"][:2000])
    # upright digits are tall (more spread along the rows); turned by uniform angles they are tall and wide alike
    assert up_rows.mean() > 1.5 * up_cols.mean()
    assert rot_rows.mean() == pytest.approx(rot_cols.mean(), rel=0.05)
    # a rotation about the centre keeps the radial spread (the corners lose a little ink)
    assert (rot_rows + rot_cols).mean() == pytest.approx((up_rows + up_cols).mean(), rel=0.05)
    # every pass builds the same digits
    again = load_dataset("mnist-rotated", str(mnist_dir))
    np.testing.assert_array_equal(again.test.arrays["image"], rotated.test.arrays["image"])


def test_inferred_likelihoods_that_are_probably_wrong_are_warned_about(tmp_path):
    rng = np.random.default_rng(3)
    classes = rng.integers(0, 3, 60).astype(float)
    classes[[4, 9]] = np.nan  # a pandas class column: float codes, NaN where missing
    one_hot = np.eye(4)[rng.integers(0, 4, 60)]
    counts = rng.poisson(30.0, (60, 2)).astype(float)  # real counts: many values, no warning
    data = load_dataset(
        str(
            write_npz(
                tmp_path / "traps.npz", group=classes, diagnosis=one_hot, reads=counts, x=rng.normal(size=(60, 3))
            )
        )
    )
    likelihoods = {m.name: m.likelihood for m in data.modalities}
    assert likelihoods["group"] == "poisson" and likelihoods["diagnosis"] == "bernoulli"
    notes = "\n".join(data.notes)
    assert (
        "modality 'group' is one column of 3 integer values (0, 1, 2), read as counts (poisson); if they are classes, give --likelihood group=categorical"
        in notes
    )
    assert "modality 'diagnosis' has exactly one 1 per row in its 4 binary columns" in notes
    assert "'reads'" not in notes.replace("modality 'reads' (2,): poisson (inferred)", "")
    given = load_dataset(str(tmp_path / "traps.npz"), likelihoods={"group": "categorical", "diagnosis": "categorical"})
    assert not [line for line in given.notes if line.startswith("warning")]


def test_the_counts_data_set_is_over_dispersed_negative_binomial_counts_with_missing_proteins():
    """`counts`: integer RNA and protein counts with the negative-binomial likelihood, proteins missing for about 30 %
    of the cells, labels = the cell types, and the truth's state dimensions; the sampler's variance against the
    negative binomial's own mu + mu^2 / r (scipy)."""
    import scipy.stats as st

    from infinimodal.data.counts import negative_binomial

    data = load_dataset("counts:n=1000,genes=40,proteins=8")
    assert [m.name for m in data.modalities] == ["rna", "protein"] and {m.likelihood for m in data.modalities} == {
        "negative_binomial"
    }
    assert data.train.arrays["rna"].shape == (800, 40) and data.truth["true_dims"] == 4 + 2 + 2
    for split in (data.train, data.valid, data.test):
        for x in split.arrays.values():
            assert (x >= 0).all() and np.array_equal(x, np.round(x))
        np.testing.assert_array_equal(split.labels, data.truth["types"][split_name(data, split)])
    assert 0.25 < 1 - data.train.mask[:, 1].mean() < 0.35 and data.train.mask[:, 0].all()
    assert not data.train.arrays["protein"][~data.train.mask[:, 1]].any()  # an unmeasured cell holds no counts
    rng = np.random.default_rng(0)
    draws = negative_binomial(rng, np.full(200_000, 6.0), np.full(200_000, 1.5))
    reference = st.nbinom(1.5, 1.5 / (1.5 + 6.0))
    assert abs(draws.mean() - reference.mean()) < 0.05 and abs(draws.var() / reference.var() - 1) < 0.03
    assert abs((draws == 0).mean() - reference.pmf(0)) < 0.005


def split_name(data, split) -> str:
    return next(name for name in ("train", "valid", "test") if getattr(data, name) is split)


def test_a_dict_of_arrays_given_as_a_data_set_is_refused_with_what_a_data_set_is():
    # a dict that is not of DataFrames reached Path(dict) and stopped with a TypeError traceback
    with pytest.raises(DataError, match="got a dict of ndarray .*embed, impute"):
        load_dataset({"mri": np.zeros((4, 3)), "pet": np.zeros((4, 2))})
    with pytest.raises(DataError, match="got int"):
        load_dataset(3)
