"""Bank benchmark: one step of many models on a mixed batch, on the CPU and on the device.

Run ``python -m streamrbf.bench bank [--quick]``. The shape of issue 13's device goal: ``10^5``
models of ``(d, k) = (16, 4)`` (``10^4`` with ``--quick``), float32 centres, a batch of ``2^20``
rows (``2^16``) drawn from the models' own blobs, each row tagged with a random model. Three
programs step the same bank on the same batch (best of several calls, each on a fresh copy of the
bank):

- ``step_bank`` on numpy arrays: the compiled segment loop (numba, its default threads, BLAS as
  the engine sets it);
- ``step_bank`` on torch CPU tensors: the batched torch program a GPU runs (gather, the mapping
  per row at its model's temperature, ``index_add``), here on the CPU;
- the same torch program on CUDA when a device is present (synchronised before and after; the
  batch is on the device already, the one transfer to the host of the result is counted).

The goal (a device): ``>= 3 x 10^8`` events/s on one H100 or H200. With a device, ClusterManyKeys
also runs on the FnApiRunner with ``device=None`` and ``device="cuda"`` on the same events
(``10^4`` keys x 20 events; ``10^3`` x 20 with ``--quick``), the whole job timed.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

__all__ = ["run"]

D, K = 16, 4
GOAL = 3e8


def _bank(models: int, seed: int = 0) -> tuple[Any, np.ndarray]:
    from streamrbf.core.state import ModelState

    rng = np.random.default_rng(seed)
    C = rng.normal(0.0, 4.0, (models, K, D)).astype(np.float32)
    ones = np.ones(models)
    state = ModelState(C, np.full((models, K), 8.0), 0.5 * ones, ones, 1e-3 * ones,
                       np.ones(models, np.int64), np.full(models, 32, np.int64),
                       np.arange(models, dtype=np.uint64))
    return state, C


def _batch(C: np.ndarray, rows: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    owner = rng.integers(0, C.shape[0], rows)
    X = C[owner, rng.integers(0, K, rows)] + rng.normal(0.0, 1.0, (rows, D)).astype(np.float32)
    return X.astype(np.float32), owner.astype(np.int64)


def _on_torch(state: Any, device: str) -> Any:
    import torch

    from streamrbf.core.state import ModelState

    return ModelState(torch.as_tensor(state.centers, device=device),
                      torch.as_tensor(state.masses, device=device),
                      *(np.array(getattr(state, f)) for f in (
                          "temperature", "initial_temperature", "min_temperature", "n_steps",
                          "n_seen", "seed")))


def _time_steps(make_state: Any, X: Any, owner: Any, repeats: int, sync: Any = None) -> float:
    from streamrbf.core.bank import step_bank
    from streamrbf.core.policy import Policy

    policy = Policy(n_clusters=K)
    best = float("inf")
    for _ in range(repeats):
        state = make_state()
        if sync is not None:
            sync()
        t = time.perf_counter()
        step_bank(state, X, owner, policy)
        if sync is not None:
            sync()
        best = min(best, time.perf_counter() - t)
    return best


def _beam_many_keys(device: str | None, keys: int, per_key: int) -> float:
    import apache_beam as beam

    from streamrbf.beam import ClusterManyKeys

    rng = np.random.default_rng(0)
    centres = rng.normal(0.0, 4.0, (keys, K, D))
    owner = np.repeat(np.arange(keys), per_key)
    rng.shuffle(owner)
    X = centres[owner, rng.integers(0, K, owner.size)] + rng.normal(0, 1, (owner.size, D))
    events = [(f"k{o}", row) for o, row in zip(owner.tolist(), X.tolist(), strict=True)]
    t = time.perf_counter()
    with beam.Pipeline(runner="FnApiRunner") as p:
        out = (p | beam.Create(events, reshuffle=False)
               | ClusterManyKeys(K, shards=8, warmup=8, output="batches", device=device))
        _ = out.assignments | beam.combiners.Count.Globally()
    return time.perf_counter() - t


def run(quick: bool = False) -> dict[str, Any]:
    """Time the bank step on numpy, torch CPU and (when present) CUDA; print a Markdown table.

    Parameters
    ----------
    quick
        ``10^4`` models and ``2^16`` rows instead of ``10^5`` and ``2^20``.

    Returns
    -------
    dict
        ``{"models", "rows", "numpy", "torch_cpu", "cuda", "device", "beam"}``: events/s per
        program (``cuda`` None without a device) and, with a device, the Beam job's seconds by
        device.

    Examples
    --------
    >>> r = run(quick=True)  # doctest: +SKIP
    >>> r["numpy"] > 0  # doctest: +SKIP
    True
    """
    import torch

    models, rows = (10_000, 1 << 16) if quick else (100_000, 1 << 20)
    state, C = _bank(models)
    X, owner = _batch(C, rows)
    repeats = 3
    out: dict[str, Any] = {"models": models, "rows": rows, "device": None, "cuda": None,
                           "beam": None}
    out["numpy"] = rows / _time_steps(lambda: _bank(models)[0], X, owner, repeats)
    Xt = torch.from_numpy(X)
    out["torch_cpu"] = rows / _time_steps(lambda: _on_torch(state, "cpu"), Xt, owner, repeats)
    if torch.cuda.is_available():
        out["device"] = torch.cuda.get_device_name()
        Xc = Xt.to("cuda")
        _time_steps(lambda: _on_torch(state, "cuda"), Xc, owner, 1, torch.cuda.synchronize)
        out["cuda"] = rows / _time_steps(lambda: _on_torch(state, "cuda"), Xc, owner, 5,
                                         torch.cuda.synchronize)
        keys = 1_000 if quick else 10_000
        out["beam"] = {"keys": keys, "events": keys * 20,
                       "cpu_s": _beam_many_keys(None, keys, 20),
                       "cuda_s": _beam_many_keys("cuda", keys, 20)}
    lines = [f"## Bank step: {models:,} models of (d, k) = ({D}, {K}), {rows:,} rows per call, "
             "float32, best of several calls", "",
             "| program | events/s | goal |", "| --- | ---: | ---: |",
             f"| step_bank, numpy (compiled) | {out['numpy']:,.0f} | |",
             f"| step_bank, torch on the CPU | {out['torch_cpu']:,.0f} | |"]
    if out["cuda"] is not None:
        lines.append(f"| step_bank, torch on {out['device']} | {out['cuda']:,.0f} | "
                     f">= {GOAL:,.0f} |")
        b = out["beam"]
        lines += ["", f"ClusterManyKeys (output='batches'), {b['keys']:,} keys x 20 events, "
                  f"FnApiRunner: CPU {b['cpu_s']:.2f} s, {out['device']} {b['cuda_s']:.2f} s."]
    else:
        lines.append("| step_bank, torch on CUDA | no device | >= 300,000,000 |")
    print("\n".join(lines))
    return out
