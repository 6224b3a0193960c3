"""Build-time generator of the Benchmarks page (run by mkdocs-gen-files, see ``mkdocs.yml``).

Reads ``docs/benchmarks/results/bench.json``, the file ``python -m streamrbf.bench ... --out DIR``
writes as ``DIR/bench.json``, and renders ``benchmarks.md`` (the machine, tables of every suite the
file holds) and PNG plots under ``benchmarks/img/`` into the built site. Suites that are missing
are left out; a suite this script does not know is shown as JSON. The core tables come from
``streamrbf.bench.core.markdown``; a suite module that defines ``markdown(result)`` is rendered with
it, the others with the renderers below.

Preview without mkdocs: ``python docs/gen_benchmarks.py [bench.json] --out DIR``.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import io
import json
import math
import re
from pathlib import Path
from typing import Any

RESULTS = Path("benchmarks") / "results" / "bench.json"  # relative to docs/
PAGE = "benchmarks.md"
IMG = "benchmarks/img"  # relative to docs/, as the page links it

SUITE_TITLES = {
    "core": "Core: `RBFKMeans` against scikit-learn",
    "river": "River: `streamrbf.river.RBFKMeans` against river and scikit-learn",
    "beam": "Beam: `ClusterPerKey` against Beam's OnlineClustering example",
    "quality": "Quality battery: one `fit`, a stream and River against K-Means and River's",
}
SUITE_COMMANDS = {name: f"python -m streamrbf.bench {name}" for name in SUITE_TITLES}

# Beam pipelines: label and what each does (streamrbf/bench/beam.py runs them in this order).
BEAM_PIPELINES = {
    "count": ("source + count of every event (floor)", "reads and counts only"),
    "bare GroupIntoBatches": ("bare GroupIntoBatches per key", "batches only"),
    "bare": ("bare ClusterPerKey batching",
             "validates, batches, counts batches and dead letters"),
    "bare re-emit": ("bare batching + re-emit", "validates, batches, one output per event"),
    "ClusterPerKey": ("**streamrbf ClusterPerKey**", "a model per key, scores + learns each event"),
    "ClusterPerKey batches": ("**streamrbf ClusterPerKey(output='batches')**",
                              "the same, one AssignmentBatch per batch"),
    "OnlineClustering": ("Beam's OnlineClustering example", "one model under one key, trains only"),
    "OnlineClustering+assign": (
        "OnlineClustering + AssignClusterLabelsInMemoryModel",
        "trains, then labels every event",
    ),
}

INTRO = """\
Every figure on this page is read from `docs/benchmarks/results/bench.json` when the site is built
(`docs/gen_benchmarks.py`); nothing here is typed by hand. The peers run in the same process (Beam:
each pipeline in its own process, on the same runner), in interleaved rounds, on one thread each
(BLAS, torch and numba alike): the **ratios** are what carry over to another machine, absolute
events/s move with its speed and load.

To regenerate on your machine:

```bash
pip install -e '.[bench,beam]'
python -m streamrbf.bench all --out bench-results        # add --quick for a one-minute run
cp bench-results/bench.json docs/benchmarks/results/bench.json
mkdocs build --strict                                     # or: mkdocs serve
```
"""


# -- formatting --------------------------------------------------------------------------------


def _rate(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    if v >= 1e3:
        return f"{v / 1e3:.1f} k"
    return f"{v:.0f}"


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def _table(head: list[str], align: list[str], rows: list[list[str]]) -> str:
    sep = {"l": "---", "r": "---:"}
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(sep[a] for a in align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _suite_renderer(name: str) -> Any | None:
    """``streamrbf.bench.<name>.markdown`` if that module defines one, else None.

    The source is parsed first so that a module without a renderer is never imported (the Beam
    suite's would import apache_beam just to find out)."""
    spec = importlib.util.find_spec(f"streamrbf.bench.{name}")
    if spec is None or not spec.origin:
        return None
    tree = ast.parse(Path(spec.origin).read_text())
    if not any(isinstance(n, ast.FunctionDef) and n.name == "markdown" for n in tree.body):
        return None
    return importlib.import_module(f"streamrbf.bench.{name}").markdown


# -- sections ----------------------------------------------------------------------------------


def machine_section(results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    quick = results.get("quick")
    mode = {True: "**quick** (`--quick`: small sizes, few rounds; indicative only)",
            False: "**full**"}.get(quick, "unknown")
    rows = [
        ["mode", mode],
        ["CPU", f"{m.get('cpu', '?')}, {m.get('cores', '?')} logical cores"],
        ["platform", str(m.get("platform", "?"))],
        ["Python", str(m.get("python", "?"))],
    ]
    libs = m.get("libraries") or {}
    rows.append(["libraries", ", ".join(f"{k} {v}" for k, v in libs.items() if v) or "?"])
    rows.append(["run on", str(m.get("date", "?"))])
    return "## Machine\n\n" + _table(["", ""], ["l", "l"], rows)


def core_section(core: dict[str, Any]) -> str:
    render = _suite_renderer("core")
    parts = []
    if render is not None:
        try:
            parts.append(render(core))
        except (KeyError, TypeError):  # a GPU entry in a schema the renderer does not know
            parts.append(render({k: v for k, v in core.items() if k != "gpu"}))
    else:
        plain = {k: v for k, v in core.items() if k != "gpu"}
        parts.append("```json\n" + json.dumps(plain, indent=2, default=str) + "\n```")
    parts.append(
        '"Share of limit" compares with the one-core limit measured for the distance and '
        "gradient matrix products plus one pass over the rows: the small shapes are bound by the "
        "per-call overhead (validation, the BLAS call, the step), the large one by the distance "
        "product itself. Quality: inertia divided by that of scikit-learn's `KMeans(n_init=10)` "
        "on the same data (1 = as good as ten restarts of batch K-Means; below 1 is better)."
    )
    gpu = core.get("gpu")
    if gpu and not any("GPU" in part for part in parts):  # a renderer without the GPU table
        rows = [[str(g.get("device", "?")), f"({g.get('d')}, {g.get('k')})",
                 f"{g.get('batch', 0):,}", str(g.get("compile", "-")), _rate(g["events_per_s"])]
                for g in _gpu_rows(core)]
        parts.append("### partial_fit on a GPU, data on the device\n\n"
                     + _table(["device", "(d, k)", "B", "compile", "events/s"],
                              ["l", "l", "r", "l", "r"], rows))
    if gpu:
        parts.append(
            "GPU: `partial_fit` with the batches already on the device (no host copies); each "
            "step includes the validation and the one transfer to the host that says whether "
            "the batch was finite. The GPU figures are not ratios: no peer runs there. What limits "
            "them: on the machine measured, one kernel launch plus one host synchronisation took "
            "~125 us, which caps any step that checks its batch before returning at ~0.5 G "
            "events/s at (64, 32), B = 65,536; the CUDA-graph step "
            "(`compile='reduce-overhead'`) spends ~150 us on the GPU and the rest in launch, "
            "copy and Python overhead."
        )
    return "\n\n".join(parts)


def _gpu_rows(core: dict[str, Any]) -> list[dict[str, Any]]:
    """The core suite's GPU entries: one dict (older files) or a list of them."""
    gpu = core.get("gpu") or []
    return [gpu] if isinstance(gpu, dict) else list(gpu)


def river_section(river: dict[str, Any]) -> str:
    parts = []
    if "speed" in river:
        rows = [[f"({r['d']}, {r['k']})", _rate(r["streamrbf"]), _rate(r["river_kmeans"]),
                 f"{r['ratio']:.1f}x"]
                for r in river["speed"]]
        parts.append("### Speed: `learn_one` + `predict_one`, events/s, 1 thread\n\n"
                     + _table(["(d, k)", "streamrbf", "river KMeans", "ratio"],
                              ["l", "r", "r", "r"], rows))
    if "memory" in river:
        rows = [[f"({r['d']}, {r['k']})", f"{r['state_bytes']:,} B",
                 f"{r['centres_counts_bytes']:,} B", f"{r['state_ratio']:.2f}",
                 f"{r['object_bytes']:,.0f} B", f"{r['object_ratio']:.2f}",
                 f"{r['river_kmeans_bytes']:,.0f} B"] for r in river["memory"]]
        parts.append(
            "### Memory per stream\n\n"
            + _table(["(d, k)", "state arrays", "float32 centres + counts", "ratio",
                      "whole object", "ratio", "river KMeans object"],
                     ["l", "r", "r", "r", "r", "r", "r"], rows)
            + "\n\nWhole objects measured with `tracemalloc` around creating and training 100 "
            "models; the floor is `k` float32 centres of `d` features plus `k` float64 counts."
        )
    titles = {
        "blobs": "overlapping blobs (k = 8, d = 16, cluster_std = 6)",
        "jump": "clusters jump half-way (k = 8, d = 16, cluster_std = 3)",
    }
    for kind, res in (river.get("quality") or {}).items():
        n_seeds = max((len(v) for v in res.values()), default=0)
        head = ["method", "ARI (mean)", "ARI per seed", "distortion / point"]
        align = ["l", "r", "l", "r"]
        if kind == "jump":
            head += ["pre-jump window ARI", "events to regain 90 % (per seed)"]
            align += ["r", "l"]
        rows = []
        for name, per_seed in res.items():
            aris = [s[0] for s in per_seed]
            row = [name, f"{_mean(aris):.3f}", ", ".join(f"{a:.2f}" for a in aris),
                   f"{_mean([s[1] for s in per_seed]):.1f}"]
            if kind == "jump":
                row += [f"{_mean([s[3] for s in per_seed]):.3f}",
                        ", ".join("never" if s[2] is None else str(s[2]) for s in per_seed)]
            rows.append(row)
        parts.append(f"### Prequential quality: {titles.get(kind, kind)}, {n_seeds} seeds\n\n"
                     + _table(head, align, rows))
    if river.get("quality"):
        parts.append(
            "Prequential: every event is first predicted, then learnt (scikit-learn's "
            "`MiniBatchKMeans`: each block of 256 is predicted, then `partial_fit`). ARI: adjusted "
            "Rand index of the predictions against the true clusters over the whole stream. "
            "Distortion: mean squared distance to the final centres (jump: over the second half). "
            "Recovery: events after the jump until the adjusted Rand index over a sliding window "
            "of 200 events (step 10) is back to 90 % of its value just before the jump; "
            "\"never\" means not within the stream."
        )
    return "\n\n".join(parts)


def beam_section(beam: dict[str, Any]) -> str:
    seconds = beam.get("seconds", {})
    rate = beam.get("events_per_s", {})
    seconds_small = beam.get("seconds_small") or {}
    steady = beam.get("steady_events_per_s") or {}
    n_small = beam.get("events_small")
    rows = []
    for name in [*BEAM_PIPELINES, *(n for n in seconds if n not in BEAM_PIPELINES)]:
        if name not in seconds:
            continue
        label, what = BEAM_PIPELINES.get(name, (name, ""))
        row = [label, what, f"{seconds[name]:.2f}", f"{rate.get(name, 0):,.0f}"]
        if steady:
            row += [f"{seconds_small.get(name, float('nan')):.2f}", f"{steady.get(name, 0):,.0f}"]
        rows.append(row)
    n = beam.get("events")
    header = ["pipeline", "what it does", "seconds", "events/s"]
    if steady:
        header += [f"seconds, {n_small:,} events", f"events/s beyond the first {n_small:,}"]
    parts = [
        (f"{n:,} events" if n else "Events")
        + " of 8 keyed streams (d = 8, k = 8, batch 256; `streamrbf/bench/beam.py`) through each "
        "pipeline on the in-process FnApiRunner, each pipeline in its own long-lived process, "
        "best of interleaved rounds (the pipelines take turns, so the machine's slow spells hit "
        "them alike)."
        + (" Each pipeline also runs on the first tenth of the events: the difference of the "
           "two times is the cost of the other events alone, without the job's fixed cost "
           "(building the pipeline, starting its stages, initialising the models): the rate of "
           "a long-running stream." if steady else "")
        + "\n\n"
        + _table(header, ["l", "l", *("r" * (len(header) - 2))], rows)
    ]
    bullets = []
    figures = (
        ("speedup_vs_online_clustering", "ClusterPerKey events/s over OnlineClustering (which "
         "only trains)", "x"),
        ("speedup_vs_online_clustering_with_labels", "ClusterPerKey events/s over "
         "OnlineClustering + labels for every event", "x"),
        ("overhead_vs_bare", "ClusterPerKey's cost over the bare job with its own batching (no "
         "per-event output)", "%"),
        ("overhead_vs_bare_reemit", "ClusterPerKey's cost over the same batching re-emitting one "
         "element per event (same output cardinality)", "%"),
        ("overhead_vs_bare_group_into_batches", "ClusterPerKey's cost over the bare "
         "GroupIntoBatches job", "%"),
        ("batches_speedup_vs_online_clustering", "ClusterPerKey(output='batches') events/s over "
         "OnlineClustering", "x"),
        ("batches_speedup_vs_online_clustering_with_labels", "ClusterPerKey(output='batches') "
         "events/s over OnlineClustering + labels", "x"),
        ("batches_overhead_vs_bare", "ClusterPerKey(output='batches')'s cost over the bare "
         "batching job (both one element per batch)", "%"),
        ("ceiling_speedup_vs_online_clustering", "Ceiling: the bare batching + re-emit job "
         "(ClusterPerKey's batching and output, no clustering at all) over OnlineClustering",
         "x"),
        ("floor_speedup_vs_online_clustering", "Reading and counting the events alone over "
         "OnlineClustering", "x"),
        ("steady_speedup_vs_online_clustering", "Beyond the first tenth (fixed costs left out): "
         "ClusterPerKey over OnlineClustering", "x"),
        ("steady_speedup_vs_online_clustering_with_labels", "Beyond the first tenth: "
         "ClusterPerKey over OnlineClustering + labels", "x"),
        ("steady_batches_speedup_vs_online_clustering", "Beyond the first tenth: "
         "ClusterPerKey(output='batches') over OnlineClustering", "x"),
    )
    for key, text, unit in figures:
        if key not in beam:
            continue
        value = f"{beam[key]:.1f}x" if unit == "x" else f"{beam[key]:+.0%}"
        bullets.append(f"- {text}: **{value}**")
    many = beam.get("many_keys")
    if many:
        bullets.append(
            f"- Many short streams: ClusterPerKey on {many['keys']:,} keys of ~100 events (batch "
            f"64, warm-up 64): **{many['events_per_s']:,.0f} events/s**, "
            f"{many['ms_per_key']:.1f} ms per key all included (each key's initialisation and "
            "Beam's state and timers per key)")
    if bullets:
        parts.append("\n".join(bullets))
    parts.append("Where the time goes, and how it scales out: [Beam deployment](beam.md).")
    return "\n\n".join(parts)


def quality_section(quality: dict[str, Any]) -> str:
    """The battery's table (``streamrbf.bench.quality.markdown``), without the local path of
    the run's own figure (the page draws it)."""
    from streamrbf.bench.quality import markdown

    lines = []
    main = False  # within the main table (the one with the pass column)
    for line in markdown(quality).splitlines():
        if line.startswith(("Figure:", "Goals per set", "FAIL")) or " sets meet every" in line:
            continue  # (the bench's own report checks the project's targets; the page measures)
        main = line.startswith("| set (n, d, k)") or (main and line.startswith("|"))
        if main:
            line = "|".join(line.split("|")[:-2]) + "|"  # without the pass column
            line = line.replace(" ✗", "")
        lines.append(line)
    if any("ari gap" in r["summary"] for r in quality.get("sets", {}).values()):
        lines += ["", "How to read the River columns: the adjusted Rand index scores agreement "
                  "with the sets' classes, not the K-Means objective. Where the classes are "
                  "not what K-Means's optimum finds (one broad class split across centres, "
                  "say), a method can score a higher ARI with a worse partition in the "
                  "objective, which the inertia column shows; a gap within two standard "
                  "errors is the seeds' luck."]
    return "\n".join(lines)


RENDERERS = {"core": core_section, "river": river_section, "beam": beam_section,
             "quality": quality_section}


def suite_section(name: str, result: Any) -> str:
    title = SUITE_TITLES.get(name, f"Suite `{name}`")
    head = f"## {title}\n\n`{SUITE_COMMANDS.get(name, f'python -m streamrbf.bench {name}')}`"
    if isinstance(result, dict) and set(result) == {"error"}:  # the suite failed in that run
        return head + f"\n\nThis suite failed in the recorded run: `{result['error']}`."
    if name in RENDERERS:
        render = _suite_renderer(name) if name not in ("core", "quality") else None
        body = render(result) if render is not None else RENDERERS[name](result)
    else:
        body = "```json\n" + json.dumps(result, indent=2, default=str) + "\n```"
    return head + "\n\n" + body


# -- plots -------------------------------------------------------------------------------------


def _figure_bytes(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Every figure is 7.5 in wide at 110 dpi (~825 px), the width of the text column, so it is
    # shown at its own size: text of 10-12 pt reads like the page's.
    plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11,
                         "xtick.labelsize": 10, "ytick.labelsize": 10, "legend.fontsize": 10})
    return plt


def plot_speed(results: dict[str, Any]) -> bytes | None:
    """Speed ratios of streamrbf over each peer (log scale; 1 = as fast)."""
    bars: list[tuple[str, float, str]] = []
    for r in (results.get("core") or {}).get("speed", []):
        bars.append((f"core ({r['d']}, {r['k']}) vs MiniBatchKMeans", r["ratio"], "C0"))
    for r in (results.get("river") or {}).get("speed", []):
        bars.append((f"river ({r['d']}, {r['k']}) vs river KMeans", r["ratio"], "C1"))
    beam = results.get("beam") or {}
    if "speedup_vs_online_clustering" in beam:
        bars.append(("Beam vs OnlineClustering", beam["speedup_vs_online_clustering"], "C2"))
    if "speedup_vs_online_clustering_with_labels" in beam:
        bars.append(("Beam vs OnlineClustering + labels",
                     beam["speedup_vs_online_clustering_with_labels"], "C2"))
    if not bars:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(bars) + 1.2))
    labels, values, colours = zip(*reversed(bars))
    ax.barh(labels, values, color=colours)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", lw=0.8)
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.2f}x", va="center")
    ax.set_xlim(min(0.5, min(values) / 1.5), max(values) * 2.5)
    ax.set_xlabel("events/s of streamrbf / events/s of the peer (log scale; > 1: streamrbf faster)")
    ax.set_title("Speed ratios")
    return _figure_bytes(fig)


def plot_quality(results: dict[str, Any]) -> bytes | None:
    """Core: inertia ratio per geometry; River: prequential ARI per method, per stream kind."""
    core_q = (results.get("core") or {}).get("quality") or []
    river_q = (results.get("river") or {}).get("quality") or {}
    panels = (1 if core_q else 0) + len(river_q)
    if not panels:
        return None
    plt = _pyplot()
    # one panel per row, each the column's width
    heights = [3.6] * (1 if core_q else 0) + [0.42 * len(res) + 1.4 for res in river_q.values()]
    fig, axes = plt.subplots(panels, 1, figsize=(7.5, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    axes = list(axes[:, 0])
    if core_q:
        ax = axes.pop(0)
        names = list(dict.fromkeys(r["data"] for r in core_q))
        for offset, key, label in ((-0.15, "fit_ratio", "fit"),
                                   (0.15, "stream_ratio", "3 passes, B = 256")):
            for i, name in enumerate(names):
                ys = [r[key] for r in core_q if r["data"] == name]
                ax.scatter([i + offset] * len(ys), ys, s=18,
                           color="C0" if key == "fit_ratio" else "C1",
                           label=label if i == 0 else None)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names])
        ax.set_ylabel("inertia / KMeans(n_init=10) inertia")
        ax.set_title("Core: quality (lower is better)")
        ax.legend(loc="upper left")
    for (kind, res), ax in zip(river_q.items(), axes):
        names = list(res)
        for i, name in enumerate(names):
            aris = [s[0] for s in res[name]]
            ax.barh(i, _mean(aris), color="C0" if name.startswith("streamrbf") else "C7")
            ax.scatter(aris, [i] * len(aris), s=10, color="black", zorder=3)
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("prequential ARI (mean; dots: seeds)")
        ax.set_title({"blobs": "River: overlapping blobs", "jump": "River: clusters jump"}
                     .get(kind, f"River: {kind}"))
    fig.tight_layout()
    return _figure_bytes(fig)


def plot_drift(results: dict[str, Any]) -> bytes | None:
    """Events to regain 90 % of the pre-jump windowed ARI, per method and seed."""
    res = ((results.get("river") or {}).get("quality") or {}).get("jump")
    if not res:
        return None
    plt = _pyplot()
    names = list(res)
    finite = [s[2] for v in res.values() for s in v if s[2] is not None]
    never_at = (max(finite) if finite else 100) * 1.3
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(names) + 1.3))
    for i, name in enumerate(names):
        recs = [s[2] for s in res[name]]
        xs = [never_at if r is None else r for r in recs]
        colour = "C0" if name.startswith("streamrbf") else "C7"
        ax.scatter([x for x, r in zip(xs, recs) if r is not None],
                   [i] * sum(r is not None for r in recs), color=colour, s=22)
        ax.scatter([x for x, r in zip(xs, recs) if r is None],
                   [i] * sum(r is None for r in recs), color="C3", marker="x", s=30)
        n_never = sum(r is None for r in recs)
        if n_never:
            ax.text(never_at, i, f"   never x{n_never}", va="center", color="C3")
    ax.axvline(never_at, color="C3", lw=0.6, ls=":")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, never_at * 1.35)
    ax.set_xlabel("events after the jump until the windowed ARI regains 90 % (lower is better)")
    ax.set_title("Drift recovery (each mark is one seed)")
    return _figure_bytes(fig)


def plot_beam(results: dict[str, Any]) -> bytes | None:
    beam = results.get("beam") or {}
    rate = beam.get("events_per_s") or {}
    if not rate:
        return None
    plt = _pyplot()
    names = [n for n in [*BEAM_PIPELINES, *rate] if n in rate]
    names = list(dict.fromkeys(names))
    labels = [BEAM_PIPELINES.get(n, (n, ""))[0].strip("*") for n in names]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(names) + 1.2))
    colours = ["C0" if n.startswith("ClusterPerKey") else "C2" if n.startswith("Online") else "C7"
               for n in names]
    ax.barh(labels, [rate[n] for n in names], color=colours)
    ax.invert_yaxis()
    for y, n in enumerate(names):
        ax.text(rate[n], y, f" {rate[n]:,.0f}", va="center")
    ax.set_xlim(0, max(rate.values()) * 1.3)
    ax.set_xlabel("events/s (higher is better)")
    ax.set_title("Beam pipelines, FnApiRunner")
    return _figure_bytes(fig)


def plot_gpu(results: dict[str, Any]) -> bytes | None:
    """GPU events/s per shape and compile mode (only when the core suite ran on a GPU)."""
    rows = _gpu_rows(results.get("core") or {})
    if not rows:
        return None
    plt = _pyplot()
    labels = [f"({r.get('d')}, {r.get('k')}), compile={r.get('compile', False)!r}" for r in rows]
    values = [r["events_per_s"] / 1e6 for r in rows]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.2))
    ax.barh(labels, values, color="C4")
    ax.invert_yaxis()
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:,.0f} M", va="center")
    ax.set_xlim(0, max(values) * 1.3)
    ax.set_xlabel("million events/s of partial_fit (higher is better)")
    ax.set_title(f"GPU: {rows[0].get('device', '?')}, batch {rows[0].get('batch', '?'):,}")
    return _figure_bytes(fig)


def plot_battery(results: dict[str, Any]) -> bytes | None:
    """The quality battery's figure, as ``python -m streamrbf.bench quality`` draws it."""
    quality = results.get("quality")
    if not quality or not quality.get("sets"):
        return None
    import tempfile

    from streamrbf.bench.quality import _figure as battery_figure

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "battery.png"
        battery_figure(quality, path)
        return path.read_bytes()


PLOTS = {  # file: (plot, alternative text, caption)
    "speed.png": (plot_speed, "Speed ratios of streamrbf over each peer",
                  "How many times faster streamrbf is than each peer on one thread, per shape "
                  "(d features, k clusters); log scale, 1 = as fast."),
    "quality.png": (plot_quality, "Clustering quality",
                    "Top: inertia of `RBFKMeans` over that of scikit-learn's "
                    "`KMeans(n_init=10)` on each data set, after `fit` and after three streaming "
                    "passes (lower is better; 1 = as good as ten restarts of batch K-Means). "
                    "Below: prequential ARI of each River method on each kind of stream (bars: "
                    "mean over seeds; dots: one seed each)."),
    "drift.png": (plot_drift, "Events to recover after the clusters jump",
                  "Events each method needs after the clusters jump to regain 90 % of its "
                  "windowed ARI from before the jump, one dot per seed (x: never)."),
    "beam.png": (plot_beam, "Events per second of each Beam pipeline",
                 "Events per second of each pipeline of the Beam benchmark (higher is better)."),
    "battery.png": (plot_battery, "Inertia ratios on the quality battery",
                    "Top: inertia over that of `KMeans(n_init=10)` on each set of the battery, "
                    "mean of the seeds (bars) and worst seed (whiskers), for one default "
                    "`RBFKMeans.fit`, one `KMeans(n_init=1)`, and three streaming passes of "
                    "`MiniBatchKMeans` and `RBFKMeans.partial_fit` (batches of 256). Below: one "
                    "fit's annealing, its temperature per iteration (falling fast when the "
                    "centres are quiet, slowly while they move) and its distinct centres."),
    "gpu.png": (plot_gpu, "GPU events per second",
                "`partial_fit` events per second on the GPU, per shape and compile mode."),
}


def _figure(name: str) -> str:
    """A plot of the page with its caption (``md_in_html``)."""
    _, alt, caption = PLOTS[name]
    caption = re.sub(r"`([^`]+)`", r"<code>\1</code>", caption)
    return (f'<figure markdown="span">\n  ![{alt}]({IMG}/{name})\n'
            f"  <figcaption>{caption}</figcaption>\n</figure>")


# -- the page ----------------------------------------------------------------------------------


def render(results: dict[str, Any] | None) -> tuple[str, dict[str, bytes]]:
    """The page's Markdown and its images ``{file name: PNG bytes}`` (linked as ``IMG/name``)."""
    if results is None:
        return ("# Benchmarks\n\nNo results are committed yet: run `python -m streamrbf.bench all "
                f"--out bench-results` and copy `bench.json` to `docs/{RESULTS.as_posix()}`.\n", {})
    ran = {k: v for k, v in results.items()
           if not (isinstance(v, dict) and set(v) == {"error"})}
    images = {}
    for name, (plot, _, _) in PLOTS.items():
        png = plot(ran)
        if png is not None:
            images[name] = png
    banner = ""
    if results.get("quick"):
        banner = (
            '!!! warning "Quick mode"\n    These figures come from a `--quick` run: small '
            "streams and few rounds, so the ratios are noisy (Beam's most: fixed start-up costs "
            "weigh heavily on a short run). A full run replaces them.\n\n"
        )
    parts = [f"# Benchmarks\n\n{banner}{INTRO}", machine_section(results)]
    if images:
        summary = ["## At a glance"]
        for name in PLOTS:
            if name in images and name not in ("beam.png", "gpu.png", "battery.png"):
                summary.append(_figure(name))
        parts.append("\n\n".join(summary))
    known = [name for name in SUITE_TITLES if name in results]
    others = [name for name in results if name not in (*SUITE_TITLES, "machine", "quick")]
    for name in [*known, *others]:
        section = suite_section(name, results[name])
        image = {"beam": "beam.png", "core": "gpu.png", "quality": "battery.png"}.get(name)
        if image in images:
            section += f"\n\n{_figure(image)}"
        parts.append(section)
    parts.append(
        "## Deep clustering\n\n`python -m streamrbf.experiments.digits` trains an autoencoder "
        "with the `RBFCluster` layer on scikit-learn's digits; its results are on the "
        "[Deep clustering](deep_clustering.md) page."
    )
    parts.append(f"Raw figures: [bench.json]({RESULTS.as_posix()}).")
    return "\n\n".join(parts) + "\n", images


def load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _build_with_mkdocs() -> None:
    import mkdocs_gen_files

    docs = Path(mkdocs_gen_files.config.docs_dir)
    text, images = render(load(docs / RESULTS))
    with mkdocs_gen_files.open(PAGE, "w") as f:
        f.write(text)
    for name, png in images.items():
        with mkdocs_gen_files.open(f"{IMG}/{name}", "wb") as f:
            f.write(png)
    mkdocs_gen_files.set_edit_path(PAGE, "gen_benchmarks.py")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Preview the Benchmarks page without mkdocs.")
    parser.add_argument("results", nargs="?", default=str(Path(__file__).parent / RESULTS))
    parser.add_argument("--out", default="benchmarks-preview")
    args = parser.parse_args(argv)
    text, images = render(load(Path(args.results)))
    out = Path(args.out)
    (out / IMG).mkdir(parents=True, exist_ok=True)
    (out / PAGE).write_text(text)
    for name, png in images.items():
        (out / IMG / name).write_bytes(png)
    print(f"wrote {out / PAGE} and {len(images)} images")
    return 0


if __name__ == "<run_path>":  # mkdocs-gen-files runs this file with runpy.run_path
    _build_with_mkdocs()
elif __name__ == "__main__":
    raise SystemExit(main())
