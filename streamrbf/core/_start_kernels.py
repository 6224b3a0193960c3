"""Compiled (numba) kernels that start many streams' models at once, and the provisional clustering
of a stream during its warm-up.

:func:`initialise_segments` is :func:`streamrbf.core.engine.initialise` (a stream's first batch:
the best of a few greedy k-means++ seedings, each annealed over the whole batch at the policy's
pace until its clustering is hard, then one last pass) for every segment of a mixed batch in one
call, with no Python per stream. Its random draws come from a splitmix64 stream seeded by each
model's seed and the seeding's trial (:func:`~streamrbf.core._online_kernels._uniform`), not from
numpy's generator, so a stream started here is reproducible from its seed but draws other seeds
than :func:`~streamrbf.core.engine.initialise` does (the tests compare the two in quality).

:func:`provisional_event` clusters a stream's warm-up events one at a time before its model
exists, so that a stream answers sensibly from its first events (and a prediction gives the label
learning the event will give it): the first event is a centre; while there are fewer than ``k``,
an event outside every ball of radius half the distance between the two closest centres (the
largest radius at which the balls stay apart) becomes a centre; once there are ``k``, an event
farther from every centre than the two closest centres are from each other merges those two
(their weighted mean) and takes the freed label (an incremental farthest-point rule, as in the
doubling algorithm for k-centre); any other event moves its nearest centre to the running mean.
:func:`align_to` then orders the model's centres
when it starts so that each provisional centre keeps its label (greedy matching on squared
distance), so labels given during the warm-up stay the stream's labels.

>>> import numpy as np
>>> C, M = np.zeros((2, 1)), np.zeros(2)
>>> [provisional_event(np.array([v]), 1.0, C, M, n) for v, n in ((0.0, 0), (0.1, 1), (9.0, 2))]
[(0, 1), (1, 2), (1, 2)]
>>> C.ravel().tolist(), M.tolist()   # 0 and 0.1 merged, 9 took the freed label
([0.05, 9.0], [2.0, 1.0])
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._kernels import HARD, row_responsibilities
from ._online_kernels import _sq_distances, _uniform

_jit = numba.njit(cache=True, nogil=True, fastmath=False)
_TINY = float(np.finfo(np.float64).tiny)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@_jit
def _draw(rs, cum, total):
    """A row index drawn with probability ``(cum[i] - cum[i - 1]) / total``."""
    u = _uniform(rs) * total
    lo, hi = 0, cum.shape[0] - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cum[mid] > u:
            hi = mid
        else:
            lo = mid + 1
    return lo


@numba.njit(cache=True, nogil=True, inline="always")
def _dist(X, i, Y, j):
    """``||X[i] - Y[j]||^2`` with four running sums (a fixed order: the same on every machine,
    and not bound by the latency of one chain of additions)."""
    dim = X.shape[1]
    s0 = s1 = s2 = s3 = 0.0
    t = 0
    while t + 4 <= dim:
        d0 = X[i, t] - Y[j, t]
        d1 = X[i, t + 1] - Y[j, t + 1]
        d2 = X[i, t + 2] - Y[j, t + 2]
        d3 = X[i, t + 3] - Y[j, t + 3]
        s0 += d0 * d0
        s1 += d1 * d1
        s2 += d2 * d2
        s3 += d3 * d3
        t += 4
    while t < dim:
        d0 = X[i, t] - Y[j, t]
        s0 += d0 * d0
        t += 1
    return (s0 + s1) + (s2 + s3)


@_jit
def _kmeans_plusplus(X, w, k, rs, C, D2, cum):
    """Greedy k-means++ on the rows ``X`` of weights ``w`` into ``C`` (the rule of
    :func:`streamrbf.core.seeding.kmeans_plusplus`: ``2 + log k`` candidates per centre drawn in
    proportion to ``w`` times the squared distance, the best kept; uniform by weight when every
    row sits on a centre)."""
    n, dim = X.shape
    trials = 2 + int(math.log(k))
    acc = 0.0
    for i in range(n):
        acc += w[i]
        cum[i] = acc
    first = _draw(rs, cum[:n], acc)
    C[0, :] = X[first]
    for i in range(n):
        D2[i] = _dist(X, i, C, 0)
    for c in range(1, k):
        acc = 0.0
        for i in range(n):
            acc += w[i] * D2[i]
            cum[i] = acc
        if not acc > 0.0:  # every row on a centre: uniform by weight
            acc = 0.0
            for i in range(n):
                acc += w[i]
                cum[i] = acc
        best, best_pot = -1, math.inf
        for _ in range(trials):
            r = _draw(rs, cum[:n], acc)
            pot = 0.0
            for i in range(n):
                pot += w[i] * min(D2[i], _dist(X, i, X, r))
            if pot < best_pot:
                best, best_pot = r, pot
        C[c, :] = X[best]
        for i in range(n):
            D2[i] = min(D2[i], _dist(X, i, C, c))


@_jit
def _pass(X, w, C, divisor, mapping, mass, sums, labels, near, scratch, idx):
    """Responsibilities of every row at ``divisor``: weighted masses and sums into ``mass``,
    ``sums``, each row's nearest centre and squared distance; True if every row of positive
    weight has one membership. (``scratch``: ``(4, k)`` floats, ``idx``: ``k`` integers.)"""
    n, dim = X.shape
    k = C.shape[0]
    dvec, vals, ubuf, tbuf = scratch[0], scratch[1], scratch[2], scratch[3]
    mass[:] = 0.0
    sums[:] = 0.0
    single = True
    for i in range(n):
        for j in range(k):
            dvec[j] = _dist(X, i, C, j)
        m, jmin, dmin = row_responsibilities(dvec, divisor, mapping, vals, idx, ubuf, tbuf)
        labels[i] = jmin
        near[i] = dmin
        if m > 1 and w[i] > 0.0:
            single = False
        for r in range(m):
            p = w[i] * vals[r]
            j = idx[r]
            mass[j] += p
            for t in range(dim):
                sums[j, t] += p * X[i, t]
    return single


@_jit
def _anneal(X, w, C, t0, tmin, factor, mapping, max_iter, tol, mass, sums, labels,  # noqa: C901
            near, scratch, idx, previous, owned, taken):
    """One seeding's annealing over the whole batch (the loop of ``engine._anneal`` for a
    stream's first batch); returns ``(temperature, steps)``; ``C`` is updated in place (the
    other arguments are scratch space)."""
    n, dim = X.shape
    k = C.shape[0]
    previous[:] = -1
    T = t0
    one_hot = mapping == HARD
    hard = one_hot
    steps = 0
    for _ in range(max_iter):
        cold = hard or one_hot or T <= tmin
        single = _pass(X, w, C, T, mapping, mass, sums, labels, near, scratch, idx)
        owned[:] = 0.0
        for i in range(n):
            if w[i] > 0.0:
                owned[labels[i]] += 1.0
        shift = 0.0
        moved = False
        taken[:] = False
        for j in range(k):
            empty = mass[j] <= 0.0 or (cold and owned[j] == 0.0)
            if empty:  # to the farthest row (of positive weight) not taken yet
                far, far_d = -1, 0.0
                for i in range(n):
                    v = near[i] if w[i] > 0.0 else 0.0
                    if v > far_d and not taken[i]:
                        far, far_d = i, v
                if far >= 0:
                    taken[far] = True
                    moved = True
                    for t in range(dim):
                        diff = X[far, t] - C[j, t]
                        shift += diff * diff
                        C[j, t] = X[far, t]
                    continue
            if mass[j] > 0.0:
                for t in range(dim):
                    c = C[j, t] + (sums[j, t] - mass[j] * C[j, t]) / mass[j]
                    diff = c - C[j, t]
                    shift += diff * diff
                    C[j, t] = c
        stable = cold and not moved
        if stable:
            for i in range(n):
                if labels[i] != previous[i]:
                    stable = False
                    break
        previous[:] = labels
        hard = single
        T = max(T * factor, tmin, _TINY)
        steps += 1
        if (cold or hard) and (shift <= tol or stable):
            break
    return T, steps


@_jit
def _feature_variance(X, w):
    n, dim = X.shape
    total = 0.0
    for i in range(n):
        total += w[i]
    if n < 2 or not total > 0.0:
        return 0.0
    var = 0.0
    for t in range(dim):
        m = 0.0
        for i in range(n):
            m += w[i] * X[i, t]
        m /= total
        s = 0.0
        for i in range(n):
            diff = X[i, t] - m
            s += w[i] * diff * diff
        var += s / total
    return var / dim


@numba.njit(cache=True, nogil=True, parallel=True)
def initialise_segments(X, w, starts, k, n_init, seeds, mapping, temperature, scale,
                        floor, floor_is_ratio, factor, max_iter, tol_rel, ref, ref_count,
                        C_out, M_out, T_out, T0_out, Tmin_out, steps_out, inertia_out,
                        repeat_rtol=-1.0):
    """Start the model of every segment ``s`` (rows ``starts[s]:starts[s + 1]`` of ``X``, weights
    ``w``): the best (lowest weighted inertia) of ``n_init`` greedy k-means++ seedings, each
    annealed from its start temperature (``temperature``, or when that is not positive ``scale``
    x the auto temperature of the seeds: half the mean squared distance to them) down by
    ``factor`` per iteration to its floor (``floor`` x the start when ``floor_is_ratio``, else
    ``min(floor, start)``), until hard and still (with ``repeat_rtol >= 0``, the seedings stop
    once the best inertia has been reached twice, within that relative tolerance: the
    :data:`~streamrbf.core.policy.REPEAT_RTOL` rule); then one last pass gives the masses. The kept
    centres are ordered by :func:`align_to` the first ``ref_count[s]`` rows of ``ref[s]``.
    Segment ``s`` draws from the splitmix64 stream of ``seeds[s]`` and the trial, so the
    segments are independent: they run on numba's threads, each segment on one thread (the
    same result whatever the number of threads)."""
    for s in numba.prange(starts.shape[0] - 1):
        _start_segment(X, w, starts, s, k, n_init, seeds, mapping, temperature, scale, floor,
                       floor_is_ratio, factor, max_iter, tol_rel, ref, ref_count, C_out, M_out,
                       T_out, T0_out, Tmin_out, steps_out, inertia_out, repeat_rtol)


@_jit
def _start_segment(X, w, starts, s, k, n_init, seeds, mapping, temperature, scale,  # noqa: C901
                   floor, floor_is_ratio, factor, max_iter, tol_rel, ref, ref_count, C_out,
                   M_out, T_out, T0_out, Tmin_out, steps_out, inertia_out, repeat_rtol):
    """:func:`initialise_segments` of segment ``s``."""
    dim = X.shape[1]
    a, b = starts[s], starts[s + 1]
    Xs, ws = X[a:b], w[a:b]
    n = b - a
    mass, sums, C = np.empty(k), np.empty((k, dim)), np.empty((k, dim))
    scratch, idx, owned = np.empty((4, k)), np.empty(k, np.int64), np.empty(k)
    labels, previous = np.empty(n, np.int64), np.empty(n, np.int64)
    near, D2, cum = np.empty(n), np.empty(n), np.empty(n)
    taken = np.empty(n, np.bool_)
    rs = np.empty(1, np.uint64)
    tol = tol_rel * _feature_variance(Xs, ws) if tol_rel > 0.0 else 0.0
    best = math.inf
    hits = 0
    for trial in range(n_init):
        rs[0] = seeds[s] * _GOLDEN + np.uint64(trial + 1)
        _kmeans_plusplus(Xs, ws, k, rs, C, D2, cum)
        if temperature > 0.0:
            t0 = temperature
        else:
            tot, acc = 0.0, 0.0
            for i in range(n):
                tot += ws[i]
                acc += ws[i] * D2[i]
            t0 = 0.5 * acc / tot if tot > 0.0 else 1.0
            if not (t0 > 0.0 and math.isfinite(t0)):
                t0 = 1.0
            t0 *= scale
        tmin = floor * t0 if floor_is_ratio else min(floor, t0)
        T, steps = _anneal(Xs, ws, C, t0, tmin, factor, mapping, max_iter, tol, mass, sums,
                           labels, near, scratch, idx, previous, owned, taken)
        inertia = 0.0  # the K-Means objective: squared distances to the nearest centres
        for i in range(n):
            dmin = math.inf
            for j in range(k):
                dmin = min(dmin, _dist(Xs, i, C, j))
            inertia += ws[i] * dmin
        if trial > 0 and repeat_rtol >= 0.0 and abs(inertia - best) <= repeat_rtol * best:
            hits += 1  # the best clustering reached again
            if hits >= 2:
                break
            continue
        if trial == 0 or inertia < best:  # (the first is kept even if it overflowed)
            best = inertia
            hits = 1
            C_out[s] = C
            T_out[s], T0_out[s], Tmin_out[s] = T, t0, tmin
            steps_out[s] = steps
            inertia_out[s] = inertia
    # the kept seeding's masses: one last pass at its temperature
    C[:] = C_out[s]
    _pass(Xs, ws, C, T_out[s], mapping, mass, sums, labels, near, scratch, idx)
    M_out[s] = mass
    if ref_count[s] > 0:
        align_to(C_out[s], M_out[s], ref[s], ref_count[s])


@_jit
def align_to(C, M, ref, m):
    """Reorder the centres ``C`` (and masses ``M``) in place so that centre ``j`` is the one
    matched to ``ref[j]`` for ``j < m``: pairs taken greedily by smallest squared distance; the
    unmatched centres keep their order in the remaining places."""
    k, dim = C.shape
    D = np.empty((k, m))
    row = np.empty(m)
    for j in range(k):
        _sq_distances(C[j], ref[:m], row)
        D[j] = row
    used_c = np.zeros(k, np.bool_)
    used_r = np.zeros(m, np.bool_)
    perm = np.full(k, -1, np.int64)
    for _ in range(m):
        bj, br, bd = -1, -1, math.inf
        for j in range(k):
            if used_c[j]:
                continue
            for r in range(m):
                if not used_r[r] and D[j, r] < bd:
                    bj, br, bd = j, r, D[j, r]
        used_c[bj] = True
        used_r[br] = True
        perm[br] = bj
    place = m
    for j in range(k):
        if not used_c[j]:
            perm[place] = j
            place += 1
    C2 = C.copy()
    M2 = M.copy()
    for r in range(k):
        C[r] = C2[perm[r]]
        M[r] = M2[perm[r]]


@_jit
def provisional_event(x, w, C, M, count, learn=True):  # noqa: C901
    """The label of one warm-up event ``x`` of weight ``w > 0`` under the ``count`` provisional
    centres ``C[:count]`` (masses ``M``), as learning it assigns it; with ``learn``, the event is
    learnt. Returns ``(label, new count)`` (the rule of the module docstring)."""
    k, dim = C.shape
    if count == 0:
        if learn:
            C[0] = x
            M[0] = w
        return 0, 1
    d = np.empty(count)
    _sq_distances(x, C[:count], d)
    j, dmin = 0, d[0]
    for r in range(1, count):
        if d[r] < dmin:
            j, dmin = r, d[r]
    pa, pb, pd = 0, 0, math.inf  # the two closest centres
    pair = np.empty(1)
    for a in range(count):
        for b in range(a + 1, count):
            _sq_distances(C[a], C[b:b + 1], pair)
            if pair[0] < pd:
                pa, pb, pd = a, b, pair[0]
    if count < k and dmin > 0.0 and (count < 2 or dmin > 0.25 * pd):
        # outside every ball of half the closest centres' distance: a new centre
        if learn:
            C[count] = x
            M[count] = w
        return count, count + 1
    if count == k and k > 1 and dmin > pd:  # the closest two merge; the event takes a label
        if learn:
            total = M[pa] + M[pb]
            for t in range(dim):
                C[pa, t] = (M[pa] * C[pa, t] + M[pb] * C[pb, t]) / total if total > 0.0 \
                    else C[pa, t]
            M[pa] = total
            C[pb] = x
            M[pb] = w
        return pb, count
    if learn:
        M[j] += w
        for t in range(dim):
            C[j, t] += w * (x[t] - C[j, t]) / M[j]
    return j, count


@_jit
def provisional_rows(X, w, slots, C, M, counts, labels):
    """:func:`provisional_event` for each row ``i`` in order, with the provisional centres
    ``C[slots[i]]`` (``counts`` per slot, updated); each row's label into ``labels``."""
    for i in range(X.shape[0]):
        s = slots[i]
        labels[i], counts[s] = provisional_event(X[i], w[i], C[s], M[s], counts[s])


@_jit
def warm_event(x, w, b, C, M, counts, n_warm, buf):
    """Stream ``b`` of a bank takes one warm-up event: :func:`provisional_event` with its
    provisional centres ``C[b]`` (``counts[b]`` of them), and the event (its weight last) into
    its buffer ``buf`` at row ``n_warm[b]``; True once ``buf`` is full (the stream starts when
    a full buffer holds its whole warm-up; a smaller one grows: ``StreamBank.warm_event``)."""
    _, counts[b] = provisional_event(x, w, C[b], M[b], counts[b])
    n = n_warm[b]
    buf[n, :-1] = x
    buf[n, -1] = w
    n_warm[b] = n + 1
    return n + 1 == buf.shape[0]
