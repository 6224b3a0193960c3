"""Compiled (numba) kernels for one event at a time: the River adapter's hot path.

Per event the arithmetic is tiny (about 35 ns at d=64, k=32); what costs is Python, so each call
into this module does a whole event: distances, responsibilities (through the core's
:func:`streamrbf.core._kernels.row_responsibilities`) and the step of
:func:`streamrbf.core.statistics.step_arrays` with that event's statistics ``m_k = p_k``, ``s_k =
p_k x`` (times the event's weight ``w``, a weight of 2 being the event twice):

    n_k <- decay * n_k + w p_k,        c_k <- c_k + w (p_k x - p_k c_k) / n_k.

Centres may be stored in float32 (River keeps one model per stream, memory matters); the step is
computed in float64 and rounded once, exactly as ``apply_step`` does. Every kernel that reads an
event first checks it is finite and returns a negative code ``-(t + 1)`` for a bad feature ``t``
without touching any state, so a failed call leaves the model unchanged.

The built-in drift detector (:func:`watch_distortion`) is a one-sided CUSUM on each event's
squared distance to its nearest centre, relative to a slow running mean of it: only a sustained
rise of the distortion raises an alarm, and one outlier alone never does (each event's share is
capped).

The reseeding candidate is the reseed rule of :mod:`streamrbf.core.seeding` (a point drawn with
probability proportional to its squared distance to the nearest centre) applied to all the events
since the last check, by weighted reservoir sampling of size one; its random numbers come from a
splitmix64 state seeded by the model's generator, so the model stays reproducible from ``seed``.

>>> import numpy as np
>>> C = np.array([[0.0, 0.0], [4.0, 0.0]])
>>> counts = np.zeros(2)
>>> aux, rs = np.zeros(3), np.zeros(1, np.uint64)
>>> learn_event(np.array([1.0, 0.0]), C, counts, 0.01, 0, 1.0, aux, rs, np.zeros(0), 1.0)
(0, 1.0, False)
>>> C[0].tolist(), counts.tolist()
([1.0, 0.0], [1.0, 0.0])
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._kernels import row_responsibilities

_jit = numba.njit(cache=True, nogil=True, fastmath=False)

# CUSUM on r = distortion / its running mean: g <- max(0, g + min(r, CAP) - 1 - SLACK), alarm when
# g > THRESHOLD. A jump far from every centre (r >= CAP) raises the alarm after 9 events; on
# stationary data even 1-d chi-square distortions reach the threshold with probability ~1e-7 per
# excursion. The running mean (of the capped distortions) is plain up to WINDOW events, then
# exponential over WINDOW; the test starts once it has seen BURN_IN events.
CUSUM_SLACK = 0.5
CUSUM_CAP = 4.0
CUSUM_THRESHOLD = 20.0
CUSUM_WINDOW = 500.0
CUSUM_BURN_IN = 50.0


@_jit
def first_nonfinite(x):
    """Index of the first non-finite entry of ``x``, or -1."""
    for t in range(x.shape[0]):
        if not math.isfinite(x[t]):
            return t
    return -1


@_jit
def _sq_distances(x, C, out):
    k, dim = C.shape
    for j in range(k):
        s = 0.0
        for t in range(dim):
            diff = x[t] - np.float64(C[j, t])
            s += diff * diff
        out[j] = s


@_jit
def _uniform(rs):
    """splitmix64: the next uniform in [0, 1) from the state ``rs[0]``."""
    z = rs[0] + np.uint64(0x9E3779B97F4A7C15)
    rs[0] = z
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@_jit
def _offer_candidate(x, w, aux, rs):
    """Weighted reservoir of size one: keep ``x`` with probability ``w / (total weight so far)``.

    ``aux[0]`` is the total weight, ``aux[1:]`` the candidate row.
    """
    if w > 0.0:
        aux[0] += w
        if _uniform(rs) * aux[0] < w:
            for t in range(x.shape[0]):
                aux[1 + t] = x[t]


@_jit
def watch_distortion(det, dmin):
    """Feed one event's distortion to the detector state ``det = [mean, n, g]``; True on alarm
    (the state then restarts). An empty ``det`` watches nothing."""
    if det.shape[0] == 0:
        return False
    if det[1] >= CUSUM_BURN_IN and det[0] > 0.0:
        # capped in the mean too, so that one outlier does not blind the test
        dmin = min(dmin, CUSUM_CAP * det[0])
        det[2] = max(0.0, det[2] + dmin / det[0] - 1.0 - CUSUM_SLACK)
        if det[2] > CUSUM_THRESHOLD:
            det[0] = 0.0
            det[1] = 0.0
            det[2] = 0.0
            return True
    det[1] += 1.0
    det[0] += (dmin - det[0]) / min(det[1], CUSUM_WINDOW)
    return False


@_jit
def watch_distortions(det, values):
    """Feed each of ``values`` to :func:`watch_distortion`; True if any raised the alarm."""
    alarm = False
    for i in range(values.shape[0]):
        alarm |= watch_distortion(det, values[i])
    return alarm


@_jit
def learn_event(x, C, counts, divisor, mapping, decay, aux, rs, det, w):
    """One gradient step on one event ``x`` of weight ``w > 0``; returns ``(nearest centre,
    squared distance to it, drift alarm)`` (see :func:`watch_distortion`, which counts events,
    not weights).

    The nearest centre is measured before the step. A non-finite ``x[t]`` returns ``(-(t + 1),
    nan, False)`` and changes nothing.
    """
    bad = first_nonfinite(x)
    if bad >= 0:
        return -(bad + 1), math.nan, False
    k = C.shape[0]
    d = np.empty(k, np.float64)
    vals = np.empty(k, np.float64)
    idx = np.empty(k, np.int64)
    ubuf = np.empty(k, np.float64)
    tbuf = np.empty(k, np.float64)
    _sq_distances(x, C, d)
    n, jmin, dmin = row_responsibilities(d, divisor, mapping, vals, idx, ubuf, tbuf)
    _offer_candidate(x, w * dmin, aux, rs)
    alarm = watch_distortion(det, dmin)
    if decay != 1.0:
        for j in range(k):
            counts[j] = decay * counts[j]
    for r in range(n):
        j = idx[r]
        p = w * vals[r]
        nk = counts[j] + p
        counts[j] = nk
        if nk > 0.0:
            for t in range(x.shape[0]):
                c = np.float64(C[j, t])
                C[j, t] = c + (p * x[t] - p * c) / nk
    return jmin, dmin, alarm


@_jit
def learn_rows(X, weights, n_rows, C, counts, divisor, mapping, decay, aux, rs, nearest, det):
    """One gradient step on the summed statistics of the first ``n_rows`` rows of ``X``, row
    ``i`` weighing ``weights[i] > 0``.

    Rows must be finite (checked as they are buffered). Writes each row's squared distance to its
    nearest centre (before the step) to ``nearest`` and returns ``(weighted distortion
    sum_ik p_ik d_ik, drift alarm on any row)``.
    """
    k, dim = C.shape
    d = np.empty(k, np.float64)
    vals = np.empty(k, np.float64)
    idx = np.empty(k, np.int64)
    ubuf = np.empty(k, np.float64)
    tbuf = np.empty(k, np.float64)
    mass = np.zeros(k, np.float64)
    sums = np.zeros((k, dim), np.float64)
    loss = 0.0
    alarm = False
    for i in range(n_rows):
        x = X[i]
        _sq_distances(x, C, d)
        n, jmin, dmin = row_responsibilities(d, divisor, mapping, vals, idx, ubuf, tbuf)
        nearest[i] = dmin
        wi = weights[i]
        _offer_candidate(x, wi * dmin, aux, rs)
        alarm |= watch_distortion(det, dmin)
        for r in range(n):
            j = idx[r]
            p = wi * vals[r]
            mass[j] += p
            loss += p * d[j]
            for t in range(dim):
                sums[j, t] += p * x[t]
    for j in range(k):
        nk = decay * counts[j] + mass[j]
        counts[j] = nk
        if nk > 0.0 and mass[j] != 0.0:
            m = mass[j]
            for t in range(dim):
                c = np.float64(C[j, t])
                C[j, t] = c + (sums[j, t] - m * c) / nk
    return loss, alarm


@_jit
def nearest_event(x, C):
    """``(nearest centre, squared distance)`` of one event; ``(-(t + 1), nan)`` if ``x[t]`` is not
    finite."""
    bad = first_nonfinite(x)
    if bad >= 0:
        return -(bad + 1), math.nan
    k, dim = C.shape
    jmin = 0
    dmin = math.inf
    for j in range(k):
        s = 0.0
        for t in range(dim):
            diff = x[t] - np.float64(C[j, t])
            s += diff * diff
        if s < dmin:
            dmin = s
            jmin = j
    return jmin, dmin


@_jit
def responsibilities_event(x, C, divisor, mapping, vals, idx):
    """Non-zero responsibilities of one event into ``vals[:n]``, ``idx[:n]``; returns ``n``, or
    ``-(t + 1)`` if ``x[t]`` is not finite."""
    bad = first_nonfinite(x)
    if bad >= 0:
        return -(bad + 1)
    k = C.shape[0]
    d = np.empty(k, np.float64)
    ubuf = np.empty(k, np.float64)
    tbuf = np.empty(k, np.float64)
    _sq_distances(x, C, d)
    n, jmin, dmin = row_responsibilities(d, divisor, mapping, vals, idx, ubuf, tbuf)
    return n


@_jit
def nearest_rows(X, C):
    """Nearest centre of each row of ``X`` (rows must be finite)."""
    B = X.shape[0]
    labels = np.empty(B, np.int64)
    for i in range(B):
        j, _ = nearest_event(X[i], C)
        labels[i] = j
    return labels



@_jit
def reseed_event_model(C, counts, aux, ratio):
    """The River re-seeding check of one model: when a centre's decayed mass is below ``ratio``
    x the largest (:func:`streamrbf.core.seeding.reseed_candidates`), the first such centre moves
    onto the reservoir's candidate ``aux[1:]`` with the smallest mass of the others; the
    reservoir then restarts. True if a centre moved."""
    k = C.shape[0]
    moved = False
    if k > 1 and aux[0] > 0.0:
        top = counts.max()
        dead = -1
        for j in range(k):
            if counts[j] < ratio * top:
                dead = j
                break
        if top > 0.0 and dead >= 0:
            low = math.inf
            for j in range(k):
                if j != dead and counts[j] < low:
                    low = counts[j]
            for t in range(C.shape[1]):
                C[dead, t] = aux[1 + t]
            counts[dead] = low
            moved = True
    aux[0] = 0.0
    return moved


@_jit
def learn_event_bank(x, w, b, C, masses, T, T_min, n_steps, n_seen, aux, rs, det, params):
    """:func:`learn_event` on model ``b`` of a bank (centres ``C[b]``, masses ``masses[b]``, its
    reservoir ``aux[b]``, ``rs[b]`` and detector ``det[b]``), then that model's bookkeeping as
    River's clusterer does it after a step: the temperature ``T[b]`` cooled by ``params[1]``
    (never below ``T_min[b]``), the step and event counters, and every ``params[3]`` steps the
    re-seeding check (:func:`reseed_event_model`, ratio ``params[4]``). ``params[0]`` is the
    masses' forgetting, ``params[2]`` the mapping's code. Returns ``(nearest centre, squared
    distance, drift alarm)``."""
    j, dmin, alarm = learn_event(x, C[b], masses[b], T[b], int(params[2]), params[0], aux[b],
                                 rs[b:b + 1], det[b], w)
    if j < 0:
        return j, dmin, alarm
    T[b] = max(T[b] * params[1], T_min[b], 2.2250738585072014e-308)
    if n_steps[b] < 9223372036854775807:
        n_steps[b] += 1
    if n_seen[b] < 9223372036854775807:
        n_seen[b] += 1
    every = np.int64(params[3])
    if every > 0 and n_steps[b] % every == 0:
        reseed_event_model(C[b], masses[b], aux[b], params[4])
    return j, dmin, alarm


@_jit
def nearest_in_model(x, C, b, count):
    """The nearest of the first ``count`` centres of model ``b`` of the bank ``C`` to the event
    ``x``: ``(index, squared distance)``."""
    best, dbest = 0, math.inf
    for j in range(count):
        s = 0.0
        for t in range(x.shape[0]):
            diff = x[t] - np.float64(C[b, j, t])
            s += diff * diff
        if s < dbest:
            best, dbest = j, s
    return best, dbest


@_jit
def nearest_rows_bank(X, models, C, counts, out):
    """Each row's nearest of the first ``counts[models[i]]`` centres of its model (0 for a row
    whose model has none, ``models[i] < 0``)."""
    for i in range(X.shape[0]):
        b = models[i]
        if b < 0 or counts[b] == 0:
            out[i] = 0
        else:
            out[i] = nearest_in_model(X[i], C, b, counts[b])[0]


@_jit
def watch_rows_bank(det, models, values, alarms):
    """Feed each row's distortion to its model's detector ``det[models[i]]`` in order; a model's
    alarm sets ``alarms[models[i]]``."""
    for i in range(values.shape[0]):
        b = models[i]
        if watch_distortion(det[b], values[i]):
            alarms[b] = True


@_jit
def memberships_rows_bank(X, models, C, divisors, mapping, vals, idx, counts):
    """Each row's non-zero memberships under its model (centres ``C[models[i]]``, at
    ``divisors[i]``): ``counts[i]`` values into ``vals[i]`` at centres ``idx[i]``."""
    k = C.shape[1]
    d = np.empty(k, np.float64)
    ubuf = np.empty(k, np.float64)
    tbuf = np.empty(k, np.float64)
    for i in range(X.shape[0]):
        _sq_distances(X[i], C[models[i]], d)
        counts[i] = row_responsibilities(d, divisors[i], mapping, vals[i], idx[i], ubuf,
                                         tbuf)[0]


@_jit
def distances_to_labels(X, models, labels, C):
    """Each row's squared distance to centre ``labels[i]`` of its model ``models[i]``."""
    out = np.empty(X.shape[0])
    for i in range(X.shape[0]):
        s = 0.0
        for t in range(X.shape[1]):
            diff = X[i, t] - np.float64(C[models[i], labels[i], t])
            s += diff * diff
        out[i] = s
    return out
