"""Chunked percentiles equal numpy's, on the path used for large maps (forced by a small chunk)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipgrad.render import selection


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(selection, "CHUNK", 64)
    monkeypatch.setattr(selection, "BUCKETS", 8)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=700),
       q=st.floats(0, 100), ties=st.booleans())
def test_equals_numpy_percentile(values, q, ties):
    array = np.asarray(values, np.float32)
    if ties:
        array = np.round(array / 1e5).astype(np.float32)  # few distinct values: buckets full of ties
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(selection, "CHUNK", 64)
        patch.setattr(selection, "BUCKETS", 8)
        ours = selection.percentile(array, q)
    expected = float(np.percentile(array, q))
    assert ours == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_heavy_tail_and_2d_maps(small_chunks):
    generator = np.random.default_rng(3)
    saliency = (generator.random((90, 70)) ** 8).astype(np.float32)
    saliency[5, 5] = 1e9
    for q in (0, 50, 99, 99.9, 100):
        assert selection.percentile(saliency, q) == pytest.approx(float(np.percentile(saliency, q)), rel=1e-6)


def test_all_finite(small_chunks):
    values = np.zeros(1000, np.float32)
    assert selection.all_finite(values)
    values[777] = np.nan
    assert not selection.all_finite(values)
