"""Deep clustering of scikit-learn's digits: an autoencoder trained jointly with ``RBFCluster``.

Run ``python -m streamrbf.experiments.digits [--seeds 5] [--epochs N] [--out PATH]``. For each
seed it compares K-Means on raw pixels, two-step clustering (train a denoising autoencoder, then
K-Means with 10 restarts on its codes) and the joint model: :class:`RBFCluster` starts at the
two-step solution (its centres, so joint training starts exactly where two-step ends) and the
autoencoder and centres are trained on reconstruction + ``lam`` * weighted distortion while the
temperature anneals. The seed controls everything (torch and numpy); the same seed gives the same
numbers.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..nn import RBFCluster

__all__ = ["DigitsConfig", "SeedResult", "cluster_accuracy", "main", "run", "run_seed"]


@dataclass(frozen=True)
class DigitsConfig:
    """Hyper-parameters of the comparison (defaults: the reported run).

    Examples
    --------
    >>> DigitsConfig(joint_epochs=2)
    DigitsConfig(n_clusters=10, code_dim=10, ..., joint_epochs=2, lam=0.01, ...)
    """

    n_clusters: int = 10
    code_dim: int = 10
    hidden: tuple[int, ...] = (256, 128)
    batch_size: int = 128
    # pretraining: denoising autoencoder (Gaussian input noise, then input dropout), Adam
    pretrain_lr: float = 3e-3
    pretrain_epochs: int = 100
    input_noise: float = 0.3
    input_dropout: float = 0.1
    # joint phase: clean inputs, Adam with a lower rate for the autoencoder than for the centres
    lr: float = 1e-3
    center_lr: float = 1e-2
    joint_epochs: int = 30
    lam: float = 0.01
    balance: float = 0.0
    temperature_decay: float = 0.9
    min_temperature: float = 1e-3
    kmeans_restarts: int = 10
    threads: int = 1


@dataclass
class SeedResult:
    """Accuracy and NMI of the three methods for one seed, plus what the figure needs.

    Examples
    --------
    >>> r = SeedResult(0, 0.79, 0.74, 0.81, 0.78, 0.83, 0.79, seconds=9.0)
    >>> round(r.joint_acc - r.two_step_acc, 2), r.codes_end is None
    (0.02, True)
    """

    seed: int
    raw_acc: float
    raw_nmi: float
    two_step_acc: float
    two_step_nmi: float
    joint_acc: float
    joint_nmi: float
    seconds: float
    codes_start: np.ndarray | None = None
    labels_start: np.ndarray | None = None
    codes_end: np.ndarray | None = None
    labels_end: np.ndarray | None = None
    temperatures: list[float] | None = None


def cluster_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Accuracy under the best one-to-one matching of clusters to classes (Hungarian).

    Parameters
    ----------
    y_true
        The classes, non-negative ints.
    y_pred
        The clusters, non-negative ints (their ids need not match the classes').

    Returns
    -------
    float
        The share of points whose cluster is matched to their class, in [0, 1].

    Examples
    --------
    >>> cluster_accuracy(np.array([0, 0, 1, 1, 2]), np.array([2, 2, 0, 0, 0]))  # ids are arbitrary
    0.8
    """
    from scipy.optimize import linear_sum_assignment

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    n = int(max(y_true.max(), y_pred.max())) + 1
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (y_pred, y_true), 1)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / y_true.size)


def load_data() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 8x8 digits scaled to [0, 1], and their labels (bundled with scikit-learn)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


class _AutoEncoder(nn.Module):
    def __init__(self, n_in: int, hidden: tuple[int, ...], code_dim: int) -> None:
        super().__init__()
        sizes = (n_in, *hidden)
        enc: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            enc += [nn.Linear(a, b), nn.ReLU()]
        self.encoder = nn.Sequential(*enc, nn.Linear(sizes[-1], code_dim))
        back = (code_dim, *reversed(hidden))
        dec: list[nn.Module] = []
        for a, b in zip(back[:-1], back[1:], strict=True):
            dec += [nn.Linear(a, b), nn.ReLU()]
        self.decoder = nn.Sequential(*dec, nn.Linear(back[-1], n_in))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return z, self.decoder(z)


def _batches(n: int, size: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    return perm.split(size)


def _kmeans(X: np.ndarray, k: int, seed: int, restarts: int):
    """``KMeans(n_init=restarts)`` (scikit-learn, Lloyd): labels and centres."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=restarts, random_state=seed).fit(X)
    return km.labels_, km.cluster_centers_


def _pretrain(
    ae: _AutoEncoder, X: torch.Tensor, config: DigitsConfig, gen: torch.Generator
) -> None:
    opt = torch.optim.Adam(ae.parameters(), lr=config.pretrain_lr)
    keep = 1.0 - config.input_dropout  # inverted dropout: kept pixels are scaled by 1 / keep
    for _ in range(config.pretrain_epochs):
        for idx in _batches(len(X), config.batch_size, gen):
            xb = X[idx]
            noisy = xb + config.input_noise * torch.randn(xb.shape, generator=gen)
            noisy = noisy * (torch.rand(xb.shape, generator=gen) > config.input_dropout) / keep
            loss = nn.functional.mse_loss(ae.decoder(ae.encoder(noisy)), xb)
            opt.zero_grad()
            loss.backward()
            opt.step()


def run_seed(
    seed: int, config: DigitsConfig = DigitsConfig(), keep_codes: bool = False
) -> SeedResult:
    """All three methods for one seed; ``keep_codes`` also returns what the figure needs.

    K-Means on the raw pixels; a denoising autoencoder pretrained, then K-Means on its codes
    (two-step); then the autoencoder and an :class:`~streamrbf.nn.RBFCluster` layer started at
    the two-step centres, trained jointly with the temperature annealed once per epoch.

    Parameters
    ----------
    seed
        Seeds K-Means, the autoencoder's weights, the batches and the input noise.
    config
        The experiment's settings.
    keep_codes
        Whether to keep the codes and labels before and after joint training, and the
        temperature of every epoch.

    Returns
    -------
    SeedResult
        Accuracy and NMI of each method, the seconds taken and, with ``keep_codes``, the codes.

    Examples
    --------
    >>> tiny = DigitsConfig(pretrain_epochs=1, joint_epochs=1, kmeans_restarts=1)
    >>> r = run_seed(0, tiny)   # seconds; the reported run takes ~10 s a seed
    >>> 0.5 < r.raw_acc <= 1.0 and 0.0 <= r.joint_nmi <= 1.0
    True
    """
    from sklearn.metrics import normalized_mutual_info_score as nmi

    start = time.perf_counter()
    torch.set_num_threads(config.threads)
    X_np, y = load_data()
    X = torch.from_numpy(X_np)
    k = config.n_clusters

    raw, _ = _kmeans(X_np, k, seed, config.kmeans_restarts)

    torch.manual_seed(seed)  # the autoencoder's initial weights
    gen = torch.Generator().manual_seed(seed)  # batches and input noise
    ae = _AutoEncoder(X.shape[1], config.hidden, config.code_dim)
    _pretrain(ae, X, config, gen)
    with torch.no_grad():
        codes = ae.encoder(X)
    two_step, centers = _kmeans(codes.numpy(), k, seed, config.kmeans_restarts)

    # Joint training starts at the two-step solution: same codes, the K-Means centres.
    layer = RBFCluster(
        k, config.code_dim, temperature_decay=config.temperature_decay,
        min_temperature=config.min_temperature
    ).init_centers(codes, centers=centers)
    labels_start = layer.predict(codes).numpy()
    temperatures = [layer.temperature.item()]
    opt = torch.optim.Adam(
        [{"params": ae.parameters()}, {"params": layer.parameters(), "lr": config.center_lr}],
        lr=config.lr,
    )
    for _ in range(config.joint_epochs):
        for idx in _batches(len(X), config.batch_size, gen):
            xb = X[idx]
            z, xr = ae(xb)
            out = layer(z)
            loss = nn.functional.mse_loss(xr, xb) + config.lam * layer.distortion(out)
            if config.balance:
                loss = loss + config.balance * layer.balance(out)
            opt.zero_grad()
            loss.backward()
            opt.step()
        temperatures.append(layer.step_temperature())
    with torch.no_grad():
        codes_end = ae.encoder(X)
        joint = layer.predict(codes_end).numpy()

    result = SeedResult(
        seed,
        cluster_accuracy(y, raw), float(nmi(y, raw)),
        cluster_accuracy(y, two_step), float(nmi(y, two_step)),
        cluster_accuracy(y, joint), float(nmi(y, joint)),
        time.perf_counter() - start,
    )
    if keep_codes:
        result.codes_start, result.labels_start = codes.numpy(), labels_start
        result.codes_end, result.labels_end = codes_end.numpy(), joint
        result.temperatures = temperatures
    return result


def run(seeds: int = 5, config: DigitsConfig = DigitsConfig()) -> list[SeedResult]:
    """Seeds ``0 .. seeds-1``; the first keeps its codes for the figure.

    Parameters
    ----------
    seeds
        Number of seeds (:func:`run_seed` for each).
    config
        The experiment's settings.

    Returns
    -------
    list of SeedResult
        One per seed, in order.

    Examples
    --------
    >>> results = run(seeds=5)   # about a minute: the docs table  # doctest: +SKIP
    >>> [round(r.joint_acc, 3) for r in results]   # doctest: +SKIP
    [0.771, 0.853, 0.827, 0.807, 0.811]
    """
    return [run_seed(s, config, keep_codes=(s == 0)) for s in range(seeds)]


_METHODS = (
    ("K-Means on raw pixels", "raw"),
    ("Two-step (autoencoder, then K-Means)", "two_step"),
    ("Joint (autoencoder + RBFCluster)", "joint"),
)


def table(results: list[SeedResult]) -> str:
    """Markdown table: mean ± std over seeds, then one column per seed (accuracy)."""
    seeds = [r.seed for r in results]
    head = "| Method | ACC mean ± std | NMI mean ± std | " + " | ".join(
        f"ACC seed {s}" for s in seeds
    ) + " |"
    lines = [head, "|" + "---|" * (3 + len(seeds))]
    for name, key in _METHODS:
        acc = np.array([getattr(r, f"{key}_acc") for r in results])
        nm = np.array([getattr(r, f"{key}_nmi") for r in results])
        cells = " | ".join(f"{a:.3f}" for a in acc)
        lines.append(
            f"| {name} | {acc.mean():.3f} ± {acc.std():.3f} | {nm.mean():.3f} ± {nm.std():.3f} "
            f"| {cells} |"
        )
    return "\n".join(lines)


def figure(result: SeedResult, path: str | Path) -> None:
    """PCA of the codes coloured by cluster before and after joint training (one scale for
    both panels, so the codes' shrinking shows), above the temperature curve; 7.5 x 7.2 in,
    readable at the docs' column width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    fig = plt.figure(figsize=(7.5, 7.2))
    grid = fig.add_gridspec(2, 2, height_ratios=[1.25, 1])
    axes = [fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, :])]
    panels = (
        (result.codes_start, result.labels_start, "Before: pretrained codes,\ntwo-step clusters"),
        (result.codes_end, result.labels_end, "After: jointly trained codes,\nnearest centre"),
    )
    points = [PCA(n_components=2, random_state=0).fit_transform(c) for c, _, _ in panels]
    low = np.min([p.min(axis=0) for p in points], axis=0)
    high = np.max([p.max(axis=0) for p in points], axis=0)
    pad = 0.04 * (high - low)
    for ax, xy, (_, labels, title) in zip(axes[:2], points, panels, strict=True):
        ax.set_xlim(low[0] - pad[0], high[0] + pad[0])  # one scale for both: the codes shrink
        ax.set_ylim(low[1] - pad[1], high[1] + pad[1])
        ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=6, vmin=0, vmax=9)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("PC 1", fontsize=10)
        ax.set_ylabel("PC 2", fontsize=10)
        ax.tick_params(labelsize=9)
    axes[2].semilogy(np.arange(len(result.temperatures)), result.temperatures, marker=".")
    axes[2].set_title("Temperature T of the layer, annealed once per joint epoch", fontsize=11)
    axes[2].set_xlabel("joint epoch (0: the start)", fontsize=10)
    axes[2].set_ylabel("T (log scale)", fontsize=10)
    axes[2].tick_params(labelsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[SeedResult]:
    """``python -m streamrbf.experiments.digits [--seeds N] [--epochs E] [--out FILE]``: run the
    comparison, print the table (and write it and the figure when asked).

    Parameters
    ----------
    argv
        The command-line arguments (None: ``sys.argv[1:]``): ``--seeds``, ``--epochs`` (joint
        epochs), ``--out`` (a Markdown file for the table) and ``--figure`` (a PNG of the codes).

    Returns
    -------
    list of SeedResult
        The results of :func:`run`.

    Examples
    --------
    >>> main(["--seeds", "5", "--figure", "docs/img/digits_codes.png"])  # doctest: +SKIP
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=None, help="joint epochs (default: config)")
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file")
    parser.add_argument("--figure", default=None, help="write the codes figure (PNG) here")
    args = parser.parse_args(argv)
    config = DigitsConfig()
    if args.epochs is not None:
        config = replace(config, joint_epochs=args.epochs)
    start = time.perf_counter()
    results = run(args.seeds, config)
    text = table(results)
    elapsed = time.perf_counter() - start
    print(text)
    print(f"\n{args.seeds} seeds in {elapsed:.1f} s; config: {asdict(config)}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    if args.figure:
        figure(results[0], args.figure)
    return results


if __name__ == "__main__":
    main()
