"""The main job (pipelines.cluster_events) end to end on the pinned default runner."""

from __future__ import annotations

import json

import pytest

from pipelines import cluster_events

pytestmark = pytest.mark.timeout(120)


def test_default_generator_job_writes_everything(tmp_path, capsys):
    lines = cluster_events.generate_events(2, 300, seed=1, bad_fraction=0.02)
    rc = cluster_events.main(["--output_dir", str(tmp_path), "--streams", "2",
                              "--events_per_stream", "300", "--seed", "1"])
    assert rc == 0
    for name in ("assignments.jsonl", "dead_letters.jsonl", "snapshots.jsonl", "summary.json",
                 "summary.md", "clusters.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    summary = json.loads((tmp_path / "summary.json").read_text())
    # Every generated line leaves as exactly one assignment or one dead letter.
    assert summary["total_events"] + summary["total_dead_letters"] == len(lines) == 600
    assert 0 < summary["total_dead_letters"] < 30
    streams = {k: v for k, v in summary["streams"].items() if k.startswith("stream-")}
    assert set(streams) == {"stream-0", "stream-1"}
    for row in streams.values():
        assert len(row["centers"]) == 3 and row["temperature"] > 0
        # three well-separated clusters of ~100 events each
        assert min(row["cluster_sizes"]) > 60
    out = capsys.readouterr()
    assert "| stream-0 |" in out.out and "events clustered" in out.out
    assert "%|" not in out.err  # stderr is not a terminal here: no progress bar
    assert (tmp_path / "clusters.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_csv_input(tmp_path):
    rows = ["key,a,b"] + [
        f"s{i % 2},{(i % 3) * 5 + 0.1 * (i % 7)},{(i % 3) * 5}" for i in range(120)]
    rows += ["s0,oops,1", "s1,1"]
    src = tmp_path / "events.csv"
    src.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert cluster_events.main(["--input", str(src), "--output_dir", str(out),
                                "--batch_size", "20"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total_events"] == 120 and summary["total_dead_letters"] == 2
    assert sorted(summary["streams"]["s0"]["cluster_sizes"]) == [20, 20, 20]
