"""The quality battery: standardised real and synthetic data sets with their number of clusters.

One battery for the test suite and the ``quality`` benchmark (issue 12): scikit-learn's bundled
digits, breast_cancer and iris, River's bundled Bananas and Phishing (read from the river package:
no download), and synthetic sets drawn from one seed:

- ``blobs20``, ``blobs50``, ``blobs100``: many Gaussian clusters (k = 20, 50, 100) with uneven
  sizes (Dirichlet) and spreads varying 10x (log-uniform);
- ``outliers``: 8 Gaussian clusters and 5% of the rows uniform over the data's box, enlarged by
  half (the outliers are labelled as a class of their own);
- ``anisotropic``: 6 elongated Gaussian clusters, randomly rotated, axis ratios up to 20;
- ``scales``: 5 clusters seen through features on very different scales and shapes before
  standardising (Gaussian, log-normal x 1e4, Gaussian x 1e-3, Poisson counts, pure noise x 1e6);
- ``dominant``: 7 classes, one holding ~80% of the rows (a broad, elongated body with
  sub-clusters), the other six small (the shape of a real set with one dominant class).

Every set is float64, standardised column by column (mean 0, standard deviation 1; a constant
column stays 0), with its k and its true labels (for the adjusted Rand index). Each synthetic set
draws from its own generator, seeded by the battery's seed and the set's name, so a set is the
same whichever other sets are asked for.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["NAMES", "QUICK", "DataSet", "battery", "dataset", "standardise"]

SKLEARN_SETS = ("iris", "breast_cancer", "digits")
RIVER_SETS = ("phishing", "bananas")
SYNTHETIC_SETS = ("outliers", "anisotropic", "scales", "dominant", "blobs20", "blobs50",
                  "blobs100")
#: Every set of the battery, smallest first within each source.
NAMES = SKLEARN_SETS + RIVER_SETS + SYNTHETIC_SETS
#: The small sets the quick benchmark and the tests use.
QUICK = ("iris", "breast_cancer", "phishing", "anisotropic")


@dataclass(frozen=True)
class DataSet:
    """One set of the battery: standardised rows, the number of clusters, the true labels.

    Parameters
    ----------
    name
        The set's name in the battery (one of :data:`NAMES`).
    X
        The rows, float64 of shape (n, d), standardised column by column.
    k
        The number of clusters to ask for (the number of classes).
    y
        The true labels (int64, shape (n,)), or None where there are none.
    source
        Where the set comes from, in words.

    Examples
    --------
    >>> ds = dataset("iris")
    >>> ds.name, ds.X.shape, ds.k, ds.y.shape
    ('iris', (150, 4), 3, (150,))
    """

    name: str
    X: np.ndarray
    k: int
    y: np.ndarray | None
    source: str

    @property
    def n(self) -> int:
        """The number of rows."""
        return int(self.X.shape[0])

    @property
    def d(self) -> int:
        """The number of features."""
        return int(self.X.shape[1])


def standardise(X: np.ndarray) -> np.ndarray:
    """``X`` as float64 with every column at mean 0 and standard deviation 1 (constant columns 0).

    Parameters
    ----------
    X
        Rows of shape (n, d).

    Returns
    -------
    numpy.ndarray
        A new float64 array of the same shape.

    Examples
    --------
    >>> Z = standardise(np.array([[1.0, 5.0], [3.0, 5.0]]))
    >>> Z
    array([[-1.,  0.],
           [ 1.,  0.]])
    """
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    std[std == 0] = 1.0
    return (X - mean) / std


def _rng(seed: int, name: str) -> np.random.Generator:
    """The generator of one synthetic set: the battery's seed and a stable hash of the name."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _sizes(rng: np.random.Generator, n: int, weights: np.ndarray, floor: int) -> np.ndarray:
    """``n`` rows split by ``weights`` (multinomial), at least ``floor`` per cluster."""
    k = len(weights)
    return floor + rng.multinomial(n - floor * k, weights / weights.sum())


def _rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def _labelled(parts: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stack the clusters' rows, label them by cluster, and shuffle rows and labels together."""
    X = np.vstack(parts)
    y = np.concatenate([np.full(len(p), i, np.int64) for i, p in enumerate(parts)])
    order = rng.permutation(len(X))
    return X[order], y[order]


def _blobs(seed: int, name: str, n: int, d: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k isotropic Gaussians, sizes Dirichlet(1) (at least 5 rows each), spreads 10^U(0, 1)
    (a 10x range), centres uniform in a box whose side grows as k^(1/d) so that clusters crowd
    equally whatever k is."""
    rng = _rng(seed, name)
    sizes = _sizes(rng, n, rng.dirichlet(np.ones(k)), floor=5)
    spreads = 10.0 ** rng.uniform(0.0, 1.0, k)
    side = 6.0 * k ** (1.0 / d) * np.median(spreads)
    centres = rng.uniform(-side / 2, side / 2, (k, d))
    parts = [c + s * rng.normal(size=(m, d)) for c, s, m in zip(centres, spreads, sizes)]
    return _labelled(parts, rng)


def _outliers(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """8 Gaussian clusters in 5 dimensions (n = 3000) of which 5% are uniform outliers over the
    clusters' box enlarged by half, labelled as a ninth class."""
    rng = _rng(seed, "outliers")
    n, d, k = 3000, 5, 8
    n_out = n // 20
    sizes = _sizes(rng, n - n_out, rng.dirichlet(np.full(k, 3.0)), floor=20)
    centres = rng.uniform(-8.0, 8.0, (k, d))
    spreads = rng.uniform(0.7, 1.5, k)
    parts = [c + s * rng.normal(size=(m, d)) for c, s, m in zip(centres, spreads, sizes)]
    inliers = np.vstack(parts)
    lo, hi = inliers.min(0), inliers.max(0)
    pad = (hi - lo) / 4
    parts.append(rng.uniform(lo - pad, hi + pad, (n_out, d)))
    return _labelled(parts, rng)


def _anisotropic(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """6 elongated Gaussian clusters in 4 dimensions (n = 3000): standard deviations along a
    random rotation from 0.25 to 5 (axis ratio up to 20), centres uniform in [-10, 10]^4."""
    rng = _rng(seed, "anisotropic")
    n, d, k = 3000, 4, 6
    sizes = _sizes(rng, n, rng.dirichlet(np.full(k, 4.0)), floor=50)
    centres = rng.uniform(-10.0, 10.0, (k, d))
    parts = []
    for c, m in zip(centres, sizes):
        axes = np.sort(10.0 ** rng.uniform(np.log10(0.25), np.log10(5.0), d))
        axes[-1], axes[0] = 5.0, 0.25
        parts.append(c + (rng.normal(size=(m, d)) * axes) @ _rotation(rng, d).T)
    return _labelled(parts, rng)


def _scales(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """5 clusters (n = 3000) seen through 9 features on very different scales and of different
    shapes before standardising: 3 Gaussian features carry the clusters (unit scale), 2
    log-normal ones carry them too (exp of a cluster offset, times 1e4: skewed, heavy right
    tail), 2 Gaussian ones at scale 1e-3 carry them weakly, 1 is Poisson counts whose rate
    depends on the cluster, and 1 is pure noise at scale 1e6."""
    rng = _rng(seed, "scales")
    n, k = 3000, 5
    y = rng.choice(k, size=n, p=rng.dirichlet(np.full(k, 3.0)))
    mu = rng.uniform(-4.0, 4.0, (k, 3))
    gauss = mu[y] + rng.normal(size=(n, 3))
    lmu = rng.uniform(-1.0, 1.0, (k, 2))
    lognormal = 1e4 * np.exp(lmu[y] + 0.5 * rng.normal(size=(n, 2)))
    smu = rng.uniform(-1.0, 1.0, (k, 2))
    small = 1e-3 * (smu[y] + rng.normal(size=(n, 2)))
    counts = rng.poisson(rng.uniform(1.0, 20.0, k)[y])[:, None].astype(np.float64)
    noise = 1e6 * rng.normal(size=(n, 1))
    return np.hstack([gauss, lognormal, small, counts, noise]), y.astype(np.int64)


def _dominant(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """7 classes in 9 dimensions (n = 5000), one holding ~80% of the rows: a broad, elongated
    body made of 5 sub-clusters of uneven sizes (centres along axes of standard deviation 0.5 to
    4 in a random rotation, spreads 0.5 to 1.5); the other six classes small (10% down to 0.3%),
    with spreads 0.5 to 2, three of them 8 to 16 from the body's centre, three 16 to 24. k-means
    must choose between splitting the body and covering the small classes."""
    rng = _rng(seed, "dominant")
    n, d, n_sub = 5000, 9, 5
    shares = np.array([0.80, 0.10, 0.05, 0.025, 0.015, 0.007, 0.003])
    sizes = _sizes(rng, n, shares, floor=10)
    sub_sizes = rng.multinomial(sizes[0], rng.dirichlet(np.ones(n_sub)))
    body = (rng.normal(size=(n_sub, d)) * np.linspace(0.5, 4.0, d)) @ _rotation(rng, d).T
    parts = [np.vstack([c + rng.uniform(0.5, 1.5) * rng.normal(size=(m, d))
                        for c, m in zip(body, sub_sizes)])]
    for j, m in enumerate(sizes[1:]):
        direction = rng.normal(size=d)
        direction /= np.linalg.norm(direction)
        reach = rng.uniform(8.0, 16.0) if j % 2 else rng.uniform(16.0, 24.0)
        parts.append(reach * direction + rng.uniform(0.5, 2.0) * rng.normal(size=(m, d)))
    return _labelled(parts, rng)


def _sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    loader = {"iris": datasets.load_iris, "breast_cancer": datasets.load_breast_cancer,
              "digits": datasets.load_digits}[name]
    X, y = loader(return_X_y=True)
    return X, y.astype(np.int64)


def _river(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A River data set read from the files the river package ships (no download)."""
    from river import datasets

    data = {"phishing": datasets.Phishing, "bananas": datasets.Bananas}[name]()
    rows, labels = [], []
    keys: list | None = None
    for x, label in data:
        if keys is None:
            keys = list(x)
        rows.append([float(x[key]) for key in keys])
        labels.append(int(label))
    return np.array(rows, dtype=np.float64), np.array(labels, dtype=np.int64)


_SOURCES: dict[str, tuple[str, int, Callable[[int], tuple[np.ndarray, np.ndarray]]]] = {
    "iris": ("scikit-learn load_iris", 3, lambda seed: _sklearn("iris")),
    "breast_cancer": ("scikit-learn load_breast_cancer", 2,
                      lambda seed: _sklearn("breast_cancer")),
    "digits": ("scikit-learn load_digits", 10, lambda seed: _sklearn("digits")),
    "phishing": ("river.datasets.Phishing", 2, lambda seed: _river("phishing")),
    "bananas": ("river.datasets.Bananas", 2, lambda seed: _river("bananas")),
    "outliers": ("synthetic: 8 Gaussians + 5% uniform outliers (a 9th class)", 8, _outliers),
    "anisotropic": ("synthetic: 6 elongated, rotated Gaussians (axis ratio 20)", 6, _anisotropic),
    "scales": ("synthetic: 5 clusters, features at scales 1e-3 to 1e6, skewed, counts", 5,
               _scales),
    "dominant": ("synthetic: 7 classes, one ~80%", 7, _dominant),
    "blobs20": ("synthetic: 20 Gaussians, Dirichlet sizes, 10x spreads", 20,
                lambda seed: _blobs(seed, "blobs20", 3000, 6, 20)),
    "blobs50": ("synthetic: 50 Gaussians, Dirichlet sizes, 10x spreads", 50,
                lambda seed: _blobs(seed, "blobs50", 5000, 8, 50)),
    "blobs100": ("synthetic: 100 Gaussians, Dirichlet sizes, 10x spreads", 100,
                 lambda seed: _blobs(seed, "blobs100", 8000, 10, 100)),
}
assert tuple(_SOURCES) == SKLEARN_SETS + RIVER_SETS + SYNTHETIC_SETS


def dataset(name: str, seed: int = 0) -> DataSet:
    """One set of the battery, standardised.

    Parameters
    ----------
    name
        One of :data:`NAMES`.
    seed
        The seed of the synthetic sets (the bundled real sets do not depend on it).

    Returns
    -------
    DataSet
        The set: float64 rows standardised column by column, its k and its labels.

    Raises
    ------
    KeyError
        ``name`` is not in the battery.
    ImportError
        A River set was asked for and river is not installed.

    Examples
    --------
    >>> ds = dataset("blobs20", seed=0)
    >>> ds.X.shape, ds.k, len(np.unique(ds.y))
    ((3000, 6), 20, 20)
    >>> bool(np.allclose(ds.X.mean(0), 0) and np.allclose(ds.X.std(0), 1))
    True
    """
    if name not in _SOURCES:
        raise KeyError(f"no data set {name!r} in the battery; choose from {', '.join(NAMES)}")
    source, k, make = _SOURCES[name]
    X, y = make(seed)
    return DataSet(name=name, X=standardise(X), k=k, y=y, source=source)


def battery(names: Iterable[str] | None = None, seed: int = 0) -> dict[str, DataSet]:
    """The battery's sets by name; the River ones are left out, with a warning, without river.

    Parameters
    ----------
    names
        The sets to load (default: all of :data:`NAMES`, in that order).
    seed
        The seed every random choice of the synthetic sets comes from.

    Returns
    -------
    dict of str to DataSet
        The sets in the order asked for, less the River ones when river is not installed (a
        ``UserWarning`` then names them).

    Examples
    --------
    >>> sets = battery(["iris", "digits"])
    >>> {name: (ds.X.shape, ds.k) for name, ds in sets.items()}
    {'iris': ((150, 4), 3), 'digits': ((1797, 64), 10)}
    """
    names = NAMES if names is None else tuple(names)
    out = {}
    skipped = []
    for name in names:
        try:
            out[name] = dataset(name, seed)
        except ImportError:
            if name not in RIVER_SETS:
                raise
            skipped.append(name)
    if skipped:
        warnings.warn(
            f"river is not installed: the battery leaves out {', '.join(skipped)} "
            "(pip install 'streamrbf[bench]')", UserWarning, stacklevel=2)
    return out
