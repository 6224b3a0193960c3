"""Tests of the torch layer ``streamrbf.nn.RBFCluster`` and the digits deep-clustering example."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrbf.core.mappings import entmax15
from streamrbf.nn import RBFCluster, RBFOutput

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _blobs(n=60, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    x = centres.repeat_interleave(n // 3, dim=0) + 0.3 * torch.randn(n, 2, generator=g)
    return x.to(dtype)


def _layer(**kw):
    kw.setdefault("initial_temperature", 0.5)
    return RBFCluster(3, 2, **kw).init_centers(_blobs(), seed=0)


# -- memberships ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mapping", ["entmax15", "softmax", "hard"])
def test_memberships_rows_sum_to_one(mapping):
    out = _layer(mapping=mapping)(_blobs())
    assert isinstance(out, RBFOutput)
    assert out.memberships.shape == out.sq_distances.shape == (60, 3)
    assert torch.allclose(out.memberships.sum(dim=1), torch.ones(60), atol=1e-6)


def test_entmax_memberships_have_exact_zeros():
    layer = _layer(initial_temperature=0.5)
    p = layer(_blobs()).memberships
    # Blobs 4 apart with spread 0.3: the far centres are well beyond 2T of the nearest.
    assert (p == 0).sum().item() >= 100
    layer.step_temperature(1000)  # down to min_temperature: exactly one-hot (Voronoi) rows
    p = layer(_blobs()).memberships
    assert ((p == 0) | (p == 1)).all()
    assert torch.equal(p.argmax(dim=1), layer.predict(_blobs()))


def test_memberships_equal_core_entmax():
    layer = _layer(initial_temperature=0.7)
    out = layer(_blobs())
    expected = entmax15(out.sq_distances, 0.7)
    assert torch.allclose(out.memberships, expected, atol=1e-7)


def test_core_entmax_gradient_equals_entmax_package():
    # The layer uses the core entmax under plain autograd: its gradient must be the entmax-1.5
    # Jacobian (the reference package's closed-form backward), at moderate and tiny temperatures.
    import entmax

    g = torch.Generator().manual_seed(1)
    for t in (0.4, 1e-3):
        d = (3 * torch.rand(40, 6, generator=g, dtype=torch.float64)).requires_grad_()
        w = torch.randn(40, 6, generator=g, dtype=torch.float64)
        (core,) = torch.autograd.grad((entmax15(d, t) * w).sum(), d)
        (pkg,) = torch.autograd.grad((entmax.entmax15(-d / t, dim=-1) * w).sum(), d)
        assert torch.allclose(core, pkg, atol=1e-9 / t)


@pytest.mark.parametrize("mapping", ["entmax15", "softmax", "hard"])
def test_layer_losses_are_the_core_losses(mapping):
    # distortion / free_energy delegate to streamrbf.core.losses; the distortion's gradient is the
    # one of sum p d with the forward's memberships (no second formula, no different gradient).
    from streamrbf.core import losses

    x = _blobs(dtype=torch.float64)
    layer = RBFCluster(3, 2, initial_temperature=0.7, mapping=mapping, dtype=torch.float64)
    layer.init_centers(x, seed=0)
    out = layer(x)
    L = layer.distortion(out, "sum")
    assert L.item() == pytest.approx(losses.distortion(out.sq_distances, 0.7, mapping).item())
    F = layer.free_energy(out, "sum")
    assert F.item() == pytest.approx(losses.free_energy(out.sq_distances, 0.7).item())
    (g_layer,) = torch.autograd.grad(L, layer.centers)
    out = layer(x)
    (g_members,) = torch.autograd.grad((out.memberships * out.sq_distances).sum(), layer.centers)
    assert torch.allclose(g_layer, g_members, atol=1e-10)


def test_entmax_gradient_finite_on_exact_ties():
    # Two coinciding nearest centres and two far ones: the threshold's sqrt sits at 0 here; the
    # core's autograd (which the layer uses as is) must stay finite.
    d = torch.tensor([[0.0, 0.0, 5.0, 5.0]], requires_grad=True)
    (core,) = torch.autograd.grad((entmax15(d, 0.1) * d).sum(), d)
    assert torch.isfinite(core).all()
    _check_tie_splits_evenly(RBFCluster(4, 2, initial_temperature=0.1))


def _check_tie_splits_evenly(layer: RBFCluster) -> None:
    """The nearest two centres tie for the point at the origin: half each, exact zeros for the
    others, finite gradients."""
    with torch.no_grad():
        layer.centers.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 3.0], [0.0, -3.0]]))
    out = layer(torch.zeros(1, 2))
    assert torch.allclose(out.memberships, torch.tensor([[0.5, 0.5, 0.0, 0.0]]))
    assert (out.memberships[:, 2:] == 0).all()
    layer.distortion(out).backward()
    assert torch.isfinite(layer.centers.grad).all()


# -- tiny temperatures ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_finite_at_tiny_temperature_naive_softmax_not(dtype):
    x = _blobs(dtype=dtype)
    layer = RBFCluster(3, 2, initial_temperature=1e-8, dtype=dtype).init_centers(x, seed=0)
    with torch.no_grad():
        layer.centers.add_(0.5)  # no centre on a data point: distances are O(0.1..30)
    out = layer(x)
    loss = layer.distortion(out) + layer.balance(out)
    loss.backward()
    assert torch.isfinite(out.memberships).all()
    assert torch.isfinite(layer.centers.grad).all()
    assert layer.centers.grad.abs().sum() > 0  # the distortion still pulls the centres

    # The naive softmax exp(-d/T) / sum exp(-d/T) underflows to 0/0 at the same temperature.
    c = layer.centers.detach().clone().requires_grad_()
    d = torch.cdist(x, c) ** 2
    e = torch.exp(-d / 1e-8)
    naive = e / e.sum(dim=1, keepdim=True)
    (naive * d).sum().backward()
    assert not torch.isfinite(naive).all()
    assert not torch.isfinite(c.grad).all()


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 8),
    k=st.integers(1, 7),
    log_t=st.floats(-8, 4),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**16),
    mapping=st.sampled_from(["entmax15", "softmax", "hard"]),
)
def test_property_memberships_finite_and_normalised(rows, k, log_t, scale, seed, mapping):
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(rows, 3, generator=g)
    layer = RBFCluster(k, 3, initial_temperature=10.0**log_t, mapping=mapping)
    with torch.no_grad():
        layer.centers.copy_(scale * torch.randn(k, 3, generator=g))
        if k > 1:
            layer.centers[1] = layer.centers[0]  # exact ties
    out = layer(x)
    p = out.memberships
    assert torch.isfinite(p).all() and (p >= 0).all()
    assert (p.sum(dim=1) - 1).abs().max().item() <= 1e-5
    layer.distortion(out).backward()
    assert torch.isfinite(layer.centers.grad).all()


def _two_centres(dtype=torch.float32, mapping="entmax15", **kw):
    layer = RBFCluster(
        2, 1, initial_temperature=1.0, temperature_decay=0.5, min_temperature=0.0,
        mapping=mapping, dtype=dtype, **kw
    )
    return layer.init_centers(torch.zeros(1, 1), centers=torch.tensor([[0.0], [4.0]]))


@pytest.mark.parametrize("mapping", ["entmax15", "softmax", "straight_through"])
def test_memberships_one_hot_once_the_temperature_underflows(mapping):
    # A 0-floor schedule anneals T below float32's (and, at the floor, float64's) smallest normal
    # number: 2T was then 0 in the division, the nearest centre got 0 / 0 = NaN and every
    # membership 0, which silently froze training. The cold limit is the hard assignment.
    x = torch.tensor([[0.0], [1.0], [4.0], [2.5], [-3.0]])
    expected = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1], [1, 0]])
    # K-Means' gradient 2 N_k (c_k - xbar_k) / n: centre 0 holds 0, 1, -3 and centre 1 holds 4, 2.5
    kmeans_grad = torch.tensor([[2 * 3 * (0 - (-2 / 3)) / 5], [2 * 2 * 0.75 / 5]])
    st_kw = {"straight_through": True} if mapping == "straight_through" else {}
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        for steps in (200, 5000):  # T = 2**-200 ~ 6e-61, then the schedule's floor (~2e-308)
            layer = _two_centres(dtype, "hard" if st_kw else mapping, **st_kw)
            layer.step_temperature(steps)
            assert 0.0 < layer.temperature.item() < 1e-60
            out = layer(x.to(dtype))
            assert torch.equal(out.memberships.detach(), expected.to(dtype)), (dtype, steps)
            assert torch.equal(out.memberships.detach().sum(dim=1), torch.ones(5, dtype=dtype))
            loss = layer.distortion(out)
            assert loss.item() == pytest.approx((0 + 1 + 0 + 2.25 + 9) / 5, rel=1e-2)
            loss.backward()
            grad = layer.centers.grad.float()
            assert torch.isfinite(grad).all()
            assert torch.allclose(grad, kmeans_grad, rtol=1e-2), (dtype, steps)


def test_exact_ties_split_evenly_with_finite_gradients_below_the_dtypes_range():
    # T is 0 in float32.
    layer = RBFCluster(4, 2, initial_temperature=1e-50, min_temperature=0.0)
    _check_tie_splits_evenly(layer)
    assert torch.allclose(layer.centers.grad[:2], torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))


@settings(max_examples=60, deadline=None)
@given(
    log_t=st.floats(-300, 2),
    floor_steps=st.integers(0, 1200),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
    mapping=st.sampled_from(["entmax15", "softmax"]),
    seed=st.integers(0, 2**16),
)
def test_property_rows_sum_to_one_at_any_temperature(log_t, floor_steps, dtype, mapping, seed):
    # From T = 10**log_t, `floor_steps` halvings of a 0-floor schedule (down to its floor, the
    # smallest normal float64, after about 1,000): every row still sums to 1, the nearest centre
    # gets the most membership, and the gradient is finite.
    g = torch.Generator().manual_seed(seed)
    x = (3.0 * torch.randn(12, 3, generator=g)).to(dtype)
    layer = RBFCluster(
        4, 3, initial_temperature=10.0**log_t, temperature_decay=0.5, min_temperature=0.0,
        mapping=mapping
    )
    with torch.no_grad():
        layer.centers.copy_(3.0 * torch.randn(4, 3, generator=g))
        layer.centers[1] = layer.centers[0]  # exact ties
    T = layer.step_temperature(floor_steps)
    assert T > 0
    out = layer(x)
    p = out.memberships.double()
    assert torch.isfinite(p).all() and (p >= 0).all()
    tol = 1e-5 if dtype != torch.bfloat16 else 1e-2
    assert (p.sum(dim=1) - 1).abs().max().item() <= tol
    nearest = layer.predict(x)
    assert torch.equal(p.gather(1, nearest[:, None])[:, 0], p.max(dim=1).values)
    if T < 1e-50:  # far below any margin: the K-Means (Voronoi) assignment, ties split evenly
        ties = nearest <= 1  # centres 0 and 1 coincide
        assert torch.allclose(p[ties, :2], torch.tensor(0.5, dtype=torch.float64), atol=tol)
        assert torch.equal(p[~ties], torch.eye(4, dtype=torch.float64)[nearest[~ties]])
    layer.distortion(out).backward()
    assert torch.isfinite(layer.centers.grad).all()


@settings(max_examples=60, deadline=None)
@given(
    log_t=st.floats(-320, 3),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.float16]),
    as_tensor=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_core_mappings_unchanged_at_ordinary_and_hard_at_tiny_temperatures(
    log_t, dtype, as_tensor, seed
):
    from streamrbf.core.mappings import _shifted_half_logits, hard, softmax

    t = max(10.0**log_t, 5e-324)
    g = torch.Generator().manual_seed(seed)
    # distinct distances 2 apart (exact in every dtype) on a random offset; row 0 has a tie
    order = torch.stack([torch.randperm(5, generator=g) for _ in range(6)])
    d = (2.0 * order + torch.rand(6, 1, generator=g)).to(dtype)
    d[0] = torch.tensor([0.5, 0.5, 2.5, 4.5, 6.5], dtype=dtype)
    temperature = torch.tensor(t, dtype=torch.float64) if as_tensor else t
    u = _shifted_half_logits(d, temperature)
    if 2.0 * t >= torch.finfo(dtype).tiny:  # the old formula, bit for bit
        dmin = d.min(dim=-1, keepdim=True).values
        assert torch.equal(u, ((dmin - d) / (2.0 * temperature)).clamp_min(-1.0))
    tol = 1e-5 if dtype in (torch.float32, torch.float64) else 3e-2  # ~3 digits in 16 bits
    for p in (entmax15(d, temperature), softmax(d, temperature)):
        p = p.double()
        assert torch.isfinite(p).all()
        assert (p.sum(dim=-1) - 1).abs().max() <= tol
        if t < 1e-45:  # below every margin of these distances: the hard assignment
            assert torch.equal(p[1:], hard(d[1:]).double())
            assert torch.allclose(p[0, :2], torch.full((2,), 0.5, dtype=torch.float64))


# -- dtypes, straight-through, balance --------------------------------------------------------


@pytest.mark.parametrize("mapping", ["entmax15", "softmax", "hard"])
def test_bfloat16_input_finite_and_close_to_float32(mapping):
    layer = _layer(mapping=mapping)
    x = _blobs() + 50.0  # far from the origin: bfloat16 norm expansions would cancel badly
    with torch.no_grad():
        layer.centers.add_(50.0)
    out16 = layer(x.to(torch.bfloat16))
    out32 = layer(x.to(torch.bfloat16).float())
    assert out16.memberships.dtype == torch.bfloat16
    assert torch.isfinite(out16.memberships.float()).all()
    assert torch.isfinite(out16.sq_distances.float()).all()
    assert (out16.memberships.float() - out32.memberships).abs().max() < 1e-2
    layer.distortion(out16).backward()
    assert torch.isfinite(layer.centers.grad).all()


def test_bfloat16_module():
    layer = _layer().to(torch.bfloat16)
    out = layer(_blobs().to(torch.bfloat16))
    assert torch.isfinite(out.memberships.float()).all()
    assert (out.memberships.float().sum(dim=1) - 1).abs().max() < 1e-2


def test_hard_straight_through_passes_gradients():
    x = _blobs()
    # a warm temperature: the softmax surrogate is not saturated on these well-separated blobs
    plain = _layer(mapping="hard", initial_temperature=5.0)
    st_layer = _layer(mapping="hard", straight_through=True, initial_temperature=5.0)
    out_plain, out_st = plain(x), st_layer(x)
    assert torch.equal(out_plain.memberships, out_st.memberships)  # forward: one-hot in both
    assert ((out_st.memberships == 0) | (out_st.memberships == 1)).all()
    w = torch.randn(60, 3, generator=torch.Generator().manual_seed(0))
    assert not out_plain.memberships.requires_grad
    (out_st.memberships * w).sum().backward()
    assert torch.isfinite(st_layer.centers.grad).all()
    assert st_layer.centers.grad.abs().sum() > 1e-3
    with pytest.raises(ValueError, match="straight_through"):
        RBFCluster(3, 2, straight_through=True)


def test_balance_is_lowest_for_uniform_usage():
    k = 4
    uniform = RBFOutput(torch.eye(k).repeat(5, 1), torch.zeros(20, k))
    soft_uniform = RBFOutput(torch.full((20, k), 1 / k), torch.zeros(20, k))
    skewed = RBFOutput(torch.eye(k)[[0, 0, 0, 1, 2, 3] * 3], torch.zeros(18, k))
    collapsed = RBFOutput(torch.eye(k)[[0] * 20], torch.zeros(20, k))
    b = [RBFCluster.balance(o).item() for o in (uniform, soft_uniform, skewed, collapsed)]
    assert b[0] == pytest.approx(0.0, abs=1e-7) and b[1] == pytest.approx(0.0, abs=1e-7)
    assert 0 < b[2] < b[3]
    assert b[3] == pytest.approx(math.log(k), rel=1e-6)


def test_losses_are_per_sample_means_and_bounded():
    layer = _layer(initial_temperature=0.2)
    out = layer(_blobs())
    L, F = layer.distortion(out), layer.free_energy(out)
    J = out.sq_distances.min(dim=1).values.mean()
    assert layer.distortion(out, "sum").item() == pytest.approx(60 * L.item(), rel=1e-6)
    # MATH.md bounds per sample: J <= L_T <= J + (k-1) T / e and J - T log k <= F_T <= J
    assert J - 1e-6 <= L <= J + 2 * 0.2 / math.e + 1e-6
    assert J - 0.2 * math.log(3) - 1e-6 <= F <= J + 1e-6
    with pytest.raises(ValueError, match="reduction"):
        layer.distortion(out, "max")


# -- state: temperature schedule, init, state_dict ----------------------------------------------


def test_temperature_schedule_and_reheat():
    layer = RBFCluster(3, 2, initial_temperature=1.0, temperature_decay=0.5, min_temperature=0.2)
    assert [layer.step_temperature() for _ in range(4)] == [0.5, 0.25, 0.2, 0.2]
    assert layer.temperature.item() == 0.2 and layer.temperature.dtype == torch.float64
    assert layer.reheat(2.0) == 0.4
    assert layer.reheat() == 1.0 and layer.temperature.item() == 1.0


def test_deprecated_names_warn_and_still_work():
    with pytest.warns(DeprecationWarning, match="temperature=.*initial_temperature"):
        old = RBFCluster(3, 2, temperature=0.5)
    with pytest.warns(DeprecationWarning, match="decay=.*temperature_decay"):
        slow = RBFCluster(3, 2, initial_temperature=1.0, decay=0.5)
    assert old.temperature.item() == 0.5
    assert slow.step_temperature() == 0.5
    with pytest.raises(ValueError, match="not both"), pytest.warns(DeprecationWarning):
        RBFCluster(3, 2, temperature=0.5, initial_temperature=1.0)


def test_init_centers_kmeans_plusplus_and_auto_temperature():
    x = _blobs()
    a = RBFCluster(3, 2).init_centers(x, seed=3)
    b = RBFCluster(3, 2).init_centers(x.numpy(), seed=3)
    assert torch.equal(a.centers, b.centers)
    # k-means++ put one centre in each blob
    assert sorted(a.predict(x).bincount().tolist()) == [20, 20, 20]
    # auto temperature (every face's rule): twice the mean squared distance to the nearest centre
    d = torch.cdist(x.double(), a.centers.detach().double()) ** 2
    assert a.temperature.item() == pytest.approx(2 * d.min(dim=1).values.mean().item(), rel=1e-5)
    assert a.initial_temperature.item() == a.temperature.item()
    given = RBFCluster(3, 2).init_centers(x, centers=a.centers.detach().numpy() + 0.1)
    assert torch.allclose(given.centers.detach(), a.centers.detach() + 0.1)
    with pytest.raises(ValueError, match="centers"):
        RBFCluster(3, 2).init_centers(x, centers=np.zeros((2, 2)))
    fixed = RBFCluster(3, 2, initial_temperature=0.3).init_centers(x, seed=3)
    assert fixed.temperature.item() == pytest.approx(0.3)
    with pytest.raises(ValueError, match="shape"):
        RBFCluster(3, 5).init_centers(x)


def test_state_dict_round_trip():
    x = _blobs()
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), RBFCluster(3, 2, temperature_decay=0.9))
    model[1].init_centers(model[0](x), seed=0)
    model[1].step_temperature(7)
    state = model.state_dict()
    assert {"1.centers", "1.temperature", "1.initial_temperature"} <= set(state)

    other = torch.nn.Sequential(
        torch.nn.Linear(2, 2), RBFCluster(3, 2, initial_temperature=5.0, temperature_decay=0.9))
    other.load_state_dict(state)
    assert other[1].temperature.item() == model[1].temperature.item()
    a, b = model[1](model[0](x)), other[1](other[0](x))
    assert torch.equal(a.memberships, b.memberships)
    assert torch.equal(a.sq_distances, b.sq_distances)
    # the schedule continues from the loaded state, in both
    assert other[1].step_temperature() == model[1].step_temperature()
    assert other[1].reheat() == model[1].reheat() == model[1].initial_temperature.item()


@pytest.mark.parametrize("key", ["temperature", "initial_temperature"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -0.5])
def test_load_state_dict_refuses_a_bad_temperature(key, bad):
    x = _blobs()
    good = _layer(initial_temperature=0.5)
    model = torch.nn.Sequential(torch.nn.Identity(), _layer(initial_temperature=2.0))
    model[1].step_temperature(3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    schedule = (model[1]._schedule.initial, model[1]._schedule.value)
    expected = model[1](x).memberships.detach()
    state = {f"1.{k}": v.clone() for k, v in good.state_dict().items()}
    state[f"1.{key}"] = torch.tensor(bad, dtype=torch.float64)
    with pytest.raises(ValueError, match=rf"1\.{key} in the state_dict must be finite and > 0"):
        model.load_state_dict(state)
    # nothing of the layer changed: its buffers, centres, schedule and memberships
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert (model[1]._schedule.initial, model[1]._schedule.value) == schedule
    p = model[1](x).memberships.detach()
    assert torch.equal(p, expected)
    assert torch.allclose(p.sum(dim=1), torch.ones(len(x)))
    # the good state still loads
    model.load_state_dict({f"1.{k}": v for k, v in good.state_dict().items()})
    assert model[1].temperature.item() == 0.5


def test_invalid_arguments():
    with pytest.raises(ValueError, match="mapping"):
        RBFCluster(3, 2, mapping="sparsemax")
    with pytest.raises(ValueError, match="decay"):
        RBFCluster(3, 2, temperature_decay=1.5)


# -- compile and devices -------------------------------------------------------------------------


def _has_compiler() -> bool:
    return shutil.which("gcc") is not None or shutil.which("cc") is not None


@pytest.mark.skipif(not _has_compiler(), reason="torch.compile (inductor) needs a C compiler")
def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    x = _blobs()
    layer = _layer(initial_temperature=0.8)
    compiled = torch.compile(layer, fullgraph=True)
    for _ in range(2):  # the temperature is a buffer: annealing must not need a recompile
        eager_out, comp_out = layer(x), compiled(x)
        assert (eager_out.memberships - comp_out.memberships).abs().max() <= 1e-5
        assert (eager_out.sq_distances - comp_out.sq_distances).abs().max() <= 1e-5
        layer.step_temperature(20)
    # gradients through the compiled layer match eager too
    (g_eager,) = torch.autograd.grad(layer.distortion(layer(x)), layer.centers)
    (g_comp,) = torch.autograd.grad(layer.distortion(compiled(x)), layer.centers)
    assert torch.allclose(g_eager, g_comp, atol=1e-4)


@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    layer = _layer(initial_temperature=0.3)
    x = _blobs()
    cpu = layer(x)
    gpu_layer = _layer(initial_temperature=0.3).cuda()
    gpu = gpu_layer(x.cuda().to(dtype))
    assert gpu.memberships.device.type == "cuda" and gpu.memberships.dtype == dtype
    assert torch.isfinite(gpu.memberships.float()).all()
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert (gpu.memberships.float().cpu() - cpu.memberships).abs().max() <= tol
    gpu_layer.distortion(gpu).backward()
    assert torch.isfinite(gpu_layer.centers.grad).all()
    gpu_layer.step_temperature()
    assert gpu_layer.temperature.device.type == "cuda"


@CUDA
def test_cuda_compile_matches_eager():
    layer = _layer(initial_temperature=0.3).cuda()
    x = _blobs().cuda()
    out = torch.compile(layer, fullgraph=True)(x)
    assert (out.memberships - layer(x).memberships).abs().max() <= 1e-5


# -- the digits example ------------------------------------------------------------------------


def test_cluster_accuracy_uses_best_matching():
    from streamrbf.experiments.digits import cluster_accuracy

    assert cluster_accuracy(np.array([0, 0, 1, 1, 2]), np.array([2, 2, 0, 0, 1])) == 1.0
    assert cluster_accuracy(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0])) == 0.5


def test_digits_experiment_tiny_budget_is_seeded():
    from streamrbf.experiments.digits import DigitsConfig, run_seed

    config = DigitsConfig(pretrain_epochs=2, joint_epochs=2)
    a = run_seed(0, config)
    b = run_seed(0, config)
    for key in ("raw", "two_step", "joint"):
        acc, nmi = getattr(a, f"{key}_acc"), getattr(a, f"{key}_nmi")
        assert 0.0 <= acc <= 1.0 and 0.0 <= nmi <= 1.0 and math.isfinite(acc + nmi)
        assert (acc, nmi) == (getattr(b, f"{key}_acc"), getattr(b, f"{key}_nmi"))
    assert a.raw_acc > 0.5  # K-Means on raw digits pixels is far above chance (0.1)
    # The joint model starts at the two-step solution: with no joint epochs it is that solution.
    c = run_seed(1, DigitsConfig(pretrain_epochs=2, joint_epochs=0), keep_codes=True)
    assert (c.joint_acc, c.joint_nmi) == (c.two_step_acc, c.two_step_nmi)
    assert np.array_equal(c.labels_start, c.labels_end)


def test_init_centers_refuses_non_finite_embeddings():
    layer = RBFCluster(2, 2)
    bad = torch.tensor([[0.0, 0.0], [1.0, float("nan")], [2.0, 2.0]])
    before = layer.centers.detach().clone()
    with pytest.raises(ValueError, match="NaN or infinity"):
        layer.init_centers(bad, seed=0)
    with pytest.raises(ValueError, match="shape"):
        layer.init_centers(torch.zeros(5, 3), seed=0)
    assert torch.equal(layer.centers.detach(), before)
