import numpy as np
import pytest
import torch

from nose.errors import NoseError
from nose.search.entropy import MomentStats, entropy_from_moments, token_moments


def numpy_entropy(rows: np.ndarray) -> float:
    return float(np.log(rows.std(axis=0)).sum())


def test_entropy_matches_numpy_and_excludes_masked_tokens():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 6, 5, generator=g) * torch.tensor([0.5, 1, 2, 3, 4]) + 10
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
    x_poisoned = x.clone()
    x_poisoned[~mask.bool()] = 1e6  # padding values must not matter
    stats = MomentStats()
    stats.add(x_poisoned, mask)
    expected = numpy_entropy(x[mask.bool()].double().numpy())
    assert stats.entropy() == pytest.approx(expected, rel=1e-12)


def test_merge_across_batches_equals_one_pass():
    x = torch.randn(8, 7, 4, dtype=torch.float64)
    whole = MomentStats()
    whole.add(x)
    parts = MomentStats()
    parts.add(x[:3])
    other = MomentStats()
    other.add(x[3:])
    merged = parts.merge(other)
    assert merged.samples == 8
    assert merged.entropy() == pytest.approx(whole.entropy(), rel=1e-13)
    n, s1, s2 = merged.arrays()
    np.testing.assert_allclose(s1.sum(0), x.sum((0, 1)).numpy())
    np.testing.assert_allclose(s2.sum(0), (x * x).sum((0, 1)).numpy())
    assert n.sum() == 56


def test_per_sample_moments_and_float64():
    x = torch.tensor([[[1.0], [3.0]], [[5.0], [5.0]]], dtype=torch.float32)
    n, s1, s2 = token_moments(x)
    assert s1.dtype == np.float64
    np.testing.assert_array_equal(n, [2, 2])
    np.testing.assert_array_equal(s1[:, 0], [4, 10])
    np.testing.assert_array_equal(s2[:, 0], [10, 50])


def test_unit_bootstrap_weights_reproduce_the_point_estimate():
    x = torch.randn(5, 9, 3)
    stats = MomentStats()
    stats.add(x)
    w = np.ones((2, 5))
    np.testing.assert_allclose(stats.bootstrap_entropy(w), [stats.entropy()] * 2, rtol=1e-12)


def test_zero_variance_is_a_clear_error_not_minus_inf():
    x = torch.randn(2, 4, 3)
    x[..., 1] = 7.25
    stats = MomentStats()
    stats.add(x)
    with pytest.raises(NoseError, match="feature 1 .* zero variance"):
        stats.entropy()


def test_empty_statistics_are_an_error():
    with pytest.raises(NoseError, match="empty"):
        MomentStats().entropy()
    with pytest.raises(NoseError, match="no counted tokens"):
        entropy_from_moments(0.0, np.zeros(3), np.zeros(3))
