"""Property-based tests (hypothesis) of the one input validator and of the file loader: nothing is dropped,
every missing row stays missing, and each kind of bad value is refused with the rows it sits in."""

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from infinimodal.data import load_dataset
from infinimodal.data.files import MAX_ABS_VALUE, check_rows
from infinimodal.errors import DataError


def named_rows(message: str) -> list[int]:
    """The row numbers an error message lists after "rows" ("rows 3, 17, 40 and 2 more")."""
    found = re.search(r"\brows ((?:\d+(?:, )?)+)", message)
    return [int(r) for r in found.group(1).split(", ") if r] if found else []


FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)


@st.composite
def modality_rows(draw, max_rows=30):
    """(values with missing rows as NaN, which rows are missing): finite values well inside the bounds."""
    n = draw(st.integers(1, max_rows))
    shape = draw(st.sampled_from([(3,), (1,), (2, 2)]))
    values = draw(arrays(np.float64, (n, *shape), elements=st.floats(-1e6, 1e6, allow_nan=False)))
    missing = draw(arrays(np.bool_, n))
    if missing.all():
        missing[0] = False
    values[missing] = np.nan
    return values, missing


@FAST
@given(modality_rows())
def test_valid_rows_come_back_all_of_them_with_missing_rows_marked(rows):
    values, missing = rows
    array, observed, likelihood = check_rows("modality 'x' in f.npz", values, "gaussian")
    assert array.shape == values.shape and array.dtype == np.float32  # nothing dropped
    np.testing.assert_array_equal(observed, ~missing)
    np.testing.assert_array_equal(array[~missing], values[~missing].astype(np.float32))
    assert (array[missing] == 0).all() and likelihood == "gaussian"


@FAST
@given(modality_rows(), st.data(), st.sampled_from(["partly missing", "inf", "-inf", "huge"]))
def test_each_bad_value_is_refused_with_its_row(rows, data, kind):
    values, missing = rows
    observed_rows = np.flatnonzero(~missing)
    row = data.draw(st.sampled_from(observed_rows.tolist()))
    flat = values.reshape(len(values), -1)
    if kind == "partly missing":
        if flat.shape[1] < 2:
            flat = np.concatenate([flat, flat], axis=1)
        flat[row, 0] = np.nan
    else:
        flat[row, -1] = {"inf": np.inf, "-inf": -np.inf, "huge": 10 * MAX_ABS_VALUE}[kind]
    with pytest.raises(DataError) as error:
        check_rows("modality 'x' in f.npz", flat, "gaussian")
    message = str(error.value)
    assert "modality 'x' in f.npz" in message and "\n" not in message
    assert named_rows(message) == [row]


@FAST
@given(arrays(np.int64, st.integers(2, 20), elements=st.integers(-5, 5)), st.sampled_from(["bernoulli", "poisson"]))
def test_values_outside_the_support_are_refused(values, likelihood):
    outside = (values < 0) | (values > 1) if likelihood == "bernoulli" else values < 0
    if outside.any():
        with pytest.raises(DataError, match=likelihood):
            check_rows("modality 'x' in f.npz", values.reshape(-1, 1), likelihood)
    else:
        _, observed, _ = check_rows("modality 'x' in f.npz", values.reshape(-1, 1), likelihood)
        assert observed.all()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.integers(10, 60), st.integers(1, 3), st.data())
def test_a_file_loads_every_row_once_with_its_missing_modalities(tmp_path_factory, n, n_modalities, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 10**6)))
    arrays_ = {f"m{k}": rng.normal(size=(n, 3)) for k in range(n_modalities)}
    missing = rng.random((n, n_modalities)) < 0.3
    missing[missing.all(axis=1), 0] = False  # every row has a modality
    for k in range(n_modalities):
        arrays_[f"m{k}"][missing[:, k]] = np.nan
    arrays_["labels"] = np.arange(n)  # a row's identity
    path = tmp_path_factory.mktemp("files") / "data.npz"
    np.savez(path, **arrays_)
    loaded = load_dataset(str(path), standardize=False)
    splits = [loaded.train, loaded.valid, loaded.test]
    ids = np.concatenate([s.labels for s in splits])
    assert sorted(ids.tolist()) == list(range(n))  # every row once, none dropped
    for split in splits:
        np.testing.assert_array_equal(split.mask, ~missing[split.labels])
        for k in range(n_modalities):
            rows = split.mask[:, k]
            np.testing.assert_allclose(split.arrays[f"m{k}"][rows], arrays_[f"m{k}"][split.labels][rows], rtol=1e-6)


@FAST
@given(st.integers(3, 40), st.data(), st.sampled_from([("bernoulli", 3.0), ("poisson", -1.0), ("poisson", 2.5)]))
def test_a_support_violation_names_the_inputs_own_row_when_rows_before_it_are_missing(n, data, case):
    likelihood, bad_value = case
    values = np.zeros((n, 2))
    missing = np.asarray(data.draw(arrays(np.bool_, n)))
    row = data.draw(st.integers(0, n - 1))
    missing[row] = False
    values[missing] = np.nan
    values[row, 1] = bad_value
    with pytest.raises(DataError) as error:
        check_rows("modality 'x' in f.npz", values, likelihood)
    assert named_rows(str(error.value)) == [row] and "(among observed rows)" in str(error.value)
