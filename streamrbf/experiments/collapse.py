"""Monotone collapse: as T falls, the soft (entmax-1.5) fixed points collapse onto the K-Means one.

For each temperature of a decreasing schedule, iterate the soft-Lloyd step at that fixed T from the
K-Means solution until it stops moving, then report the distance of the soft fixed point to the
K-Means centres and the gap of objectives J(C_T) - J(C*). Run ``python -m
streamrbf.experiments.collapse`` to print the table that docs/theory.md shows.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning

from streamrbf import RBFKMeans


def collapse_table(
    X: np.ndarray, n_clusters: int, seed: int = 0, temperatures: list[float] | None = None
) -> list[dict[str, float]]:
    """Rows ``{temperature, relative_temperature, centroid_distance, objective_gap}``."""
    km = KMeans(n_clusters, n_init=10, random_state=seed, tol=0, max_iter=1000).fit(X)
    C_star = km.cluster_centers_
    j_star = km.inertia_
    scale = j_star / len(X)  # mean squared distance to the nearest centre
    if temperatures is None:
        temperatures = [scale * 2.0**e for e in range(2, -14, -2)]
    rows = []
    for t in temperatures:
        with warnings.catch_warnings():
            # hot enough, centres merge: fewer distinct clusters is what this table measures
            warnings.simplefilter("ignore", ConvergenceWarning)
            soft = RBFKMeans(
                n_clusters, init=C_star, initial_temperature=t, temperature_decay=1.0, tol=0.0,
                max_iter=2000,
            ).fit(X)
        C = soft.cluster_centers_
        rows.append(
            {
                "temperature": t,
                "relative_temperature": t / scale,
                "centroid_distance": float(np.abs(C - C_star).max()),
                "objective_gap": float(-soft.score(X) - j_star) / j_star,
            }
        )
    return rows


def markdown(rows: list[dict[str, float]], title: str) -> str:
    lines = [
        f"**{title}**",
        "",
        "| T / mean d_min | max abs centre difference | (J(C_T) - J*) / J* |",
        "| ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['relative_temperature']:.4g} | {r['centroid_distance']:.3e} | "
            f"{r['objective_gap']:.3e} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    for seed in range(args.seeds):
        X, _ = make_blobs(600, centers=4, n_features=3, random_state=seed)
        print(markdown(collapse_table(X, 4, seed), f"blobs, seed {seed}"), "\n")
        Xa = X @ np.array([[0.6, -0.64, 0.0], [-0.41, 0.85, 0.0], [0.0, 0.0, 1.0]])
        print(markdown(collapse_table(Xa, 4, seed), f"anisotropic, seed {seed}"), "\n")
        Xv, _ = make_blobs(600, centers=3, cluster_std=[1.0, 2.5, 0.5], random_state=seed)
        print(markdown(collapse_table(Xv, 3, seed), f"unequal variances, seed {seed}"), "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
