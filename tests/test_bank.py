"""A bank of models stepped in one call equals each model stepped alone on its rows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrbf.core import engine
from streamrbf.core.bank import step_bank
from streamrbf.core.policy import Policy
from streamrbf.core.state import ModelState


def _bank(rng, B, k, d, dtype, starved=False):
    C = rng.normal(0, 3, (B, k, d)).astype(dtype)
    masses = rng.uniform(1, 50, (B, k))
    if starved:
        masses[:, 0] = 1e-6  # a starved centre in every model: each one re-seeds
    T = np.exp(rng.uniform(np.log(1e-3), np.log(10.0), B))
    return ModelState(C, masses, T, T * 4, T / 100, rng.integers(0, 50, B).astype(np.int64),
                      rng.integers(0, 5000, B).astype(np.int64),
                      rng.integers(0, 2**31, B).astype(np.int64))


def _alone(bank, X, models, policy, w=None):
    out = bank
    for b in np.unique(models):
        rows = np.flatnonzero(models == b)
        out, _ = engine.step(out, X[rows], policy, model=int(b),
                             sample_weight=None if w is None else w[rows])
    return out


def _assert_same(a, b, rtol):
    for name in ("centers", "masses", "temperature", "n_steps", "n_seen"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=rtol, atol=rtol,
                                   err_msg=name)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(1, 4), st.integers(0, 2**16),
       st.sampled_from(["entmax15", "softmax", "hard"]), st.booleans(), st.booleans(),
       st.sampled_from([np.float64, np.float32]))
def test_a_bank_step_is_each_model_stepped_alone(B, k, d, seed, mapping, starved, weighted,
                                                 dtype):
    rng = np.random.default_rng(seed)
    bank = _bank(rng, B, k, d, dtype, starved)
    n = int(rng.integers(0, 40))
    models = rng.integers(0, B, n)  # some models may have no rows
    X = rng.normal(0, 3, (n, d)).astype(dtype)
    w = rng.uniform(0, 3, n) if weighted and n else None
    policy = Policy(n_clusters=k, mapping=mapping)
    new, r = step_bank(bank, X, models, policy, sample_weight=w)
    ref = _alone(bank, X, models, policy, w)
    _assert_same(new, ref, 1e-6 if dtype == np.float64 else 1e-4)
    assert r.rows_per_model.tolist() == np.bincount(models, minlength=B).tolist()
    # scored before the step: each row's nearest centre of its own model
    for i in range(n):
        dist = ((bank.centers[models[i]].astype(float) - X[i].astype(float)) ** 2).sum(1)
        assert r.nearest[i] == pytest.approx(dist.min(), rel=1e-6, abs=1e-9)


def test_the_input_record_is_unchanged_and_empty_models_stay():
    rng = np.random.default_rng(0)
    bank = _bank(rng, 4, 3, 2, np.float64)
    before = {name: np.copy(getattr(bank, name)) for name in ("centers", "masses", "temperature")}
    new, _ = step_bank(bank, rng.normal(size=(10, 2)), np.full(10, 2), Policy(n_clusters=3))
    for name, value in before.items():
        np.testing.assert_array_equal(getattr(bank, name), value)
        np.testing.assert_array_equal(getattr(new, name)[[0, 1, 3]], value[[0, 1, 3]])
    assert new.n_steps.tolist() == [bank.n_steps[0], bank.n_steps[1], bank.n_steps[2] + 1,
                                    bank.n_steps[3]]


@pytest.mark.parametrize(("models", "X", "match"), [
    (np.array([0, 5]), np.zeros((2, 2)), r"model indices must be in \[0, 4\)"),
    (np.array([0.0, 1.0]), np.zeros((2, 2)), "one integer index per row"),
    (np.array([0]), np.zeros((2, 2)), "one integer index per row"),
    (np.array([0, 1]), np.zeros((2, 3)), "3"),
])
def test_bad_calls_are_refused_by_name(models, X, match):
    bank = _bank(np.random.default_rng(0), 4, 3, 2, np.float64)
    with pytest.raises(ValueError, match=match):
        step_bank(bank, X, models, Policy(n_clusters=3))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(1, 4), st.integers(0, 2**16),
       st.sampled_from(["entmax15", "softmax", "hard"]), st.booleans(), st.booleans(),
       st.sampled_from([np.float64, np.float32]))
def test_the_torch_bank_program_is_the_compiled_one(B, k, d, seed, mapping, starved, weighted,
                                                   dtype):
    """The device path (a batched torch program), run on CPU tensors here and on CUDA when a
    device is there, against the compiled CPU path."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    bank = _bank(rng, B, k, d, dtype, starved)
    n = int(rng.integers(0, 40))
    models = rng.integers(0, B, n)
    X = rng.normal(0, 3, (n, d)).astype(dtype)
    w = rng.uniform(0, 3, n) if weighted and n else None
    policy = Policy(n_clusters=k, mapping=mapping)
    ref, r_ref = step_bank(bank, X, models, policy, sample_weight=w)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    on_torch = ModelState(torch.from_numpy(bank.centers).to(dev),
                          torch.from_numpy(bank.masses).to(dev), bank.temperature,
                          bank.initial_temperature, bank.min_temperature, bank.n_steps,
                          bank.n_seen, bank.seed)
    new, r = step_bank(on_torch, torch.from_numpy(X).to(dev), models, policy, sample_weight=w)
    rtol = 1e-6 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(new.centers.cpu().numpy(), ref.centers, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(new.masses.cpu().numpy(), ref.masses, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(new.temperature, ref.temperature, rtol=1e-12)
    assert new.n_steps.tolist() == ref.n_steps.tolist()
    assert new.n_seen.tolist() == ref.n_seen.tolist()
    np.testing.assert_allclose(r.nearest, r_ref.nearest, rtol=1e-9, atol=1e-9)
