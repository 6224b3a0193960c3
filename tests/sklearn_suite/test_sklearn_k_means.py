"""scikit-learn's own ``sklearn/cluster/tests/test_k_means.py``, from the installed wheel, with
``MiniBatchKMeans`` replaced by :class:`streamrbf.RBFKMeans` by exact text substitution: no
assert or tolerance changed.

Collected here are the cases that exercise RBFKMeans (a parametrised ``Estimator`` of RBFKMeans,
or a test body that names it); scikit-learn's own ``KMeans`` cases are left out. The cases that
test scikit-learn internals are skipped, each with its reason (:data:`INTERNALS`).
Run every seed with ``SKLEARN_TESTS_GLOBAL_RANDOM_SEED=all SKLEARN_RUN_FLOAT32_TESTS=1``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sklearn

SOURCE = Path(sklearn.__file__).parent / "cluster" / "tests" / "test_k_means.py"
IMPORT = "from sklearn.cluster import KMeans, MiniBatchKMeans, k_means, kmeans_plusplus"

# Tests of scikit-learn internals, by name: skipped, with the reason.
INTERNALS = {
    "test_minibatch_update_consistency": "private _mini_batch_step and _labels_inertia",
    "test_minibatch_kmeans_init_size": "init_size (private _init_size)",
    "test_warning_n_init_precomputed_centers": "n_init warnings",
    "test_kmeans_init_auto_with_initial_centroids": "n_init warnings (private _n_init)",
    "test_n_init_auto": "n_init warnings",
}


def _source() -> str:
    text = SOURCE.read_text()
    if IMPORT not in text:
        raise RuntimeError(f"{SOURCE} no longer imports the estimators as {IMPORT!r}")
    # One line for one line: tracebacks point at scikit-learn's own line numbers.
    text = text.replace(IMPORT, "from sklearn.cluster import KMeans, k_means, kmeans_plusplus; "
                        "from streamrbf import RBFKMeans")
    return text.replace("MiniBatchKMeans", "RBFKMeans")


_TEXT = _source()
exec(compile(_TEXT, str(SOURCE), "exec"), globals())  # noqa: S102

# The tests whose body (decorators aside) names RBFKMeans.
NAMES_RBF = {
    node.name for node in ast.parse(_TEXT).body
    if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    and any(isinstance(n, ast.Name) and n.id == "RBFKMeans"
            for stmt in node.body for n in ast.walk(stmt))
}
