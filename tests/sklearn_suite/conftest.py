"""scikit-learn's test fixtures and seed parametrisation for its own k-means tests (run here with
RBFKMeans in MiniBatchKMeans's place): ``global_random_seed`` follows
``SKLEARN_TESTS_GLOBAL_RANDOM_SEED`` and ``global_dtype`` runs float32 under
``SKLEARN_RUN_FLOAT32_TESTS=1``, exactly as in scikit-learn's own runs."""

from __future__ import annotations

from sklearn.conftest import global_dtype, pytest_generate_tests  # noqa: F401


def _is(value, cls) -> bool:
    return value is cls or (isinstance(value, tuple) and cls in value)


def pytest_collection_modifyitems(config, items):
    import pytest
    from sklearn.cluster import KMeans

    from streamrbf import RBFKMeans

    keep, drop = [], []
    for item in items:
        if "sklearn_suite/" not in item.nodeid:  # this hook sees the whole session's items
            keep.append(item)
            continue
        module = item.module
        params = getattr(getattr(item, "callspec", None), "params", {}).values()
        if any(_is(v, KMeans) for v in params):
            drop.append(item)  # scikit-learn's own KMeans case
            continue
        ours = any(_is(v, RBFKMeans) for v in params) or item.originalname in module.NAMES_RBF
        if not ours:
            drop.append(item)
            continue
        reason = module.INTERNALS.get(item.originalname)
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"scikit-learn internals: {reason}"))
        keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
