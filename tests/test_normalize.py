"""Running normalisers: the parallel mean/variance update, observation normalisation, reward scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policygrad.errors import InputError
from policygrad.normalize import ObservationNormalizer, RewardScaler, RunningMeanStd


def test_running_mean_std_hand_values() -> None:
    # Pseudo-count ε = 1e-4 with μ = 0, σ² = 1, then the batch {1, 3} (μ_b = 2, σ²_b = 1, n_b = 2):
    # n = 2.0001, μ = 2 · 2/2.0001, σ² = (1·1e-4 + 1·2 + 4 · 1e-4·2/2.0001) / 2.0001.
    rms = RunningMeanStd((), epsilon=1e-4)
    rms.update(np.array([1.0, 3.0]))
    n = 2.0001
    assert rms.count == pytest.approx(n)
    assert rms.mean == pytest.approx(4.0 / n)
    assert rms.var == pytest.approx((1e-4 + 2.0 + 4.0 * 1e-4 * 2.0 / n) / n)


def test_running_mean_std_batches_equal_one_batch() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 3))
    one = RunningMeanStd((3,), epsilon=1e-12)
    one.update(data)
    split = RunningMeanStd((3,), epsilon=1e-12)
    for chunk in np.array_split(data, [1, 7, 100, 101, 640]):
        split.update(chunk)
    np.testing.assert_allclose(split.mean, data.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(split.var, data.var(axis=0), rtol=1e-9)
    np.testing.assert_allclose(split.mean, one.mean, rtol=1e-12)
    np.testing.assert_allclose(split.var, one.var, rtol=1e-12)
    split.update(np.zeros((0, 3)))  # an empty batch changes nothing
    np.testing.assert_allclose(split.mean, one.mean, rtol=1e-12)


def test_running_mean_std_rejects_wrong_shape() -> None:
    with pytest.raises(InputError, match="shape"):
        RunningMeanStd((3,)).update(np.zeros((4, 2)))


def test_observation_normalizer_standardises_and_clips() -> None:
    rng = np.random.default_rng(1)
    norm = ObservationNormalizer(2, clip=5.0)
    for _ in range(50):
        norm(rng.normal([10.0, -4.0], [3.0, 0.5], size=(16, 2)))
    out = norm.normalize(rng.normal([10.0, -4.0], [3.0, 0.5], size=(4000, 2)))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=0.05)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=0.05)
    far = norm.normalize(np.array([[1e6, -1e6]]))
    np.testing.assert_array_equal(far, [[5.0, -5.0]])


def test_observation_normalizer_update_mask_and_frozen() -> None:
    norm = ObservationNormalizer(1)
    norm(np.array([[1.0], [100.0]]), update_mask=np.array([True, False]))
    assert norm.rms.mean[0] == pytest.approx(1.0, rel=1e-3)  # the masked row stayed out
    norm.frozen = True
    before = (norm.rms.mean.copy(), norm.rms.var.copy(), norm.rms.count)
    out = norm(np.array([[50.0]]))
    assert (norm.rms.mean, norm.rms.var, norm.rms.count) == before
    assert out[0, 0] == pytest.approx(norm.normalize(np.array([[50.0]]))[0, 0])


def test_observation_normalizer_state_round_trip() -> None:
    norm = ObservationNormalizer(3)
    norm(np.random.default_rng(2).normal(size=(64, 3)))
    tensors, meta = norm.state("obs_norm")
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())
    restored = ObservationNormalizer(3)
    restored.load_state(tensors, meta, "obs_norm")
    x = np.random.default_rng(3).normal(size=(5, 3))
    np.testing.assert_array_equal(restored.normalize(x), norm.normalize(x))
    with pytest.raises(InputError, match="shape"):
        ObservationNormalizer(4).load_state(tensors, meta, "obs_norm")
    with pytest.raises(InputError, match="missing"):
        ObservationNormalizer(3).load_state({}, meta, "obs_norm")


def test_reward_scaler_hand_values() -> None:
    # γ = 0.5, one environment, rewards 2, 4 then the episode ends, then 1.
    # R: 2, 0.5·2 + 4 = 5 (reset to 0 after this step), then 1; each reward is divided by the
    # std of the R seen so far and clipped to ±10 (the first one is: Var[R] is ~5e-4 then).
    scaler = RewardScaler(1, gamma=0.5, epsilon=0.0)
    reference = RunningMeanStd(())
    for reward, done, r_value in ((2.0, False, 2.0), (4.0, True, 5.0), (1.0, False, 1.0)):
        reference.update(np.array([r_value]))
        scaled = scaler(np.array([reward]), np.array([done]))
        expected = np.clip(reward / np.sqrt(reference.var), -10.0, 10.0)
        assert scaled[0] == pytest.approx(expected, rel=1e-6)
    assert scaler.returns[0] == pytest.approx(1.0)


def test_reward_scaler_keeps_the_sign_and_skips_invalid_steps() -> None:
    scaler = RewardScaler(2, gamma=0.9)
    rng = np.random.default_rng(4)
    for _ in range(100):
        rewards = rng.normal(-3.0, 1.0, size=2)
        scaled = scaler(rewards, np.zeros(2, dtype=bool))
        np.testing.assert_array_equal(np.sign(scaled), np.sign(rewards))
    count = scaler.rms.count
    returns = scaler.returns.copy()
    scaler(np.array([5.0, 5.0]), np.zeros(2, dtype=bool), valid=np.array([True, False]))
    assert scaler.rms.count == pytest.approx(count + 1)
    assert scaler.returns[1] == returns[1]  # the dummy step did not accumulate


def test_reward_scaler_state_round_trip_restarts_returns() -> None:
    scaler = RewardScaler(3, gamma=0.99)
    for _ in range(10):
        scaler(np.ones(3), np.zeros(3, dtype=bool))
    tensors, meta = scaler.state()
    restored = RewardScaler(3, gamma=0.99)
    restored.load_state(tensors, meta)
    assert restored.rms.var == pytest.approx(scaler.rms.var)
    np.testing.assert_array_equal(restored.returns, 0.0)
    np.testing.assert_array_equal(restored.scale(np.array([2.0])), scaler.scale(np.array([2.0])))
