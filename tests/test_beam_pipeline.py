"""The main job (streamrbf.jobs.cluster_events, run from a clone as pipelines.cluster_events) end
to end on the pinned default runner."""

from __future__ import annotations

import json

import pytest

from streamrbf.jobs import cluster_events

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


def _run_job(tmp_path, pattern, *flags):
    """Run the job on ``pattern``; (summary, dead letters) from what it wrote."""
    out = tmp_path / "out"
    assert cluster_events.main(["--input", str(pattern), "--output_dir", str(out), "--quiet",
                                *flags]) == 0
    summary = json.loads((out / "summary.json").read_text())
    dead = [json.loads(line) for line in (out / "dead_letters.jsonl").read_text().splitlines()]
    return summary, dead


def _rows(n=60):
    """``n`` events of stream s0 as (a, b): two clusters, near (0, 100) and near (10, 0)."""
    return [(0.1 * (i % 5), 100 + 0.1 * (i % 3)) if i % 2 else (10 + 0.1 * (i % 3), 0.1 * (i % 5))
            for i in range(n)]


def _centers(summary):
    return sorted([round(a, 1), round(b, 1)] for a, b in summary["streams"]["s0"]["centers"])


def test_a_line_that_is_not_utf8_is_a_dead_letter(tmp_path):
    lines = [json.dumps({"key": "s0", "a": a, "b": b}).encode() for a, b in _rows()]
    lines.insert(7, b"\xff\xfe not utf-8")
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    summary, dead = _run_job(tmp_path, src, "--n_clusters", "2", "--batch_size", "10")
    assert summary["total_events"] == 60 and summary["total_dead_letters"] == 1
    assert dead[0]["reason"].startswith("not UTF-8: 'utf-8' codec can't decode byte 0xff")
    assert dead[0]["event"] == "\ufffd\ufffd not utf-8"
    assert sorted(summary["streams"]["s0"]["cluster_sizes"]) == [30, 30]
    assert _centers(summary) == [[0.2, 100.1], [10.1, 0.2]]


def test_a_blank_csv_line_is_a_dead_letter(tmp_path):
    rows = [f"s0,{a},{b}" for a, b in _rows()]
    rows[10:10] = ["", "   "]
    src = tmp_path / "events.csv"
    src.write_text("key,a,b\n" + "\n".join(rows) + "\n")
    summary, dead = _run_job(tmp_path, src, "--n_clusters", "2", "--batch_size", "10")
    assert summary["total_events"] == 60 and summary["total_dead_letters"] == 2
    assert [d["reason"] for d in dead] == ["blank line", "blank line"]
    assert sorted(summary["streams"]["s0"]["cluster_sizes"]) == [30, 30]


def test_each_csv_file_is_read_with_its_own_header(tmp_path):
    # The same events in two files whose columns come in different orders: each file is read
    # with its own header (with the first one's, a and b would be swapped silently).
    rows = _rows()
    (tmp_path / "p1.csv").write_text(
        "key,a,b\n" + "".join(f"s0,{a},{b}\n" for a, b in rows[:30]))
    (tmp_path / "p2.csv").write_text(
        "key,b,a\n" + "".join(f"s0,{b},{a}\n" for a, b in rows[30:]))
    summary, dead = _run_job(tmp_path, tmp_path / "p*.csv", "--n_clusters", "2",
                             "--batch_size", "10")
    assert _centers(summary) == [[0.2, 100.1], [10.1, 0.2]]
    assert sorted(summary["streams"]["s0"]["cluster_sizes"]) == [30, 30]
    # header lines are not events
    assert summary["total_events"] == 60 and dead == []


def test_rows_of_a_csv_file_without_a_usable_header_are_dead_letters(tmp_path):
    (tmp_path / "p1.csv").write_text("key,a,b\n" + "".join(f"s0,{a},{b}\n" for a, b in _rows()))
    (tmp_path / "p2.csv").write_text("\ns0,1,2\ns0,3,4\n")  # no header line
    (tmp_path / "p3.csv").write_text("key,a,a\ns0,1,2\n")  # a column named twice
    summary, dead = _run_job(tmp_path, tmp_path / "p*.csv", "--n_clusters", "2",
                             "--batch_size", "10")
    assert summary["total_events"] == 60 and summary["total_dead_letters"] == 3
    assert _centers(summary) == [[0.2, 100.1], [10.1, 0.2]]
    reasons = sorted(d["reason"].replace(str(tmp_path), "DIR") for d in dead)
    assert reasons == ["DIR/p2.csv: no header line (a CSV file starts with one)"] * 2 + [
        "DIR/p3.csv: header repeats column 'a'"]


def test_csv_with_a_byte_order_mark(tmp_path):
    # Excel's "CSV UTF-8" export: a BOM before the header, CRLF line ends.
    src = tmp_path / "excel.csv"
    src.write_bytes(b"\xef\xbb\xbfkey,a,b\r\n"
                    + b"".join(f"s0,{a},{b}\r\n".encode() for a, b in _rows()))
    summary, dead = _run_job(tmp_path, src, "--n_clusters", "2", "--batch_size", "10")
    assert summary["total_events"] == 60 and dead == []
    assert _centers(summary) == [[0.2, 100.1], [10.1, 0.2]]


@pytest.mark.parametrize("name, bad_line, reason", [
    ("events.jsonl", "[" * 100_000, "JSON nested too deeply"),
    ("events.csv", "s0," + "9" * 200_000 + ",1", "field larger than field limit (131072)"),
])
def test_one_pathological_line_is_one_dead_letter(tmp_path, name, bad_line, reason):
    rows = _rows(20)
    if name.endswith(".csv"):
        lines = ["key,a,b"] + [f"s0,{a},{b}" for a, b in rows]
    else:
        lines = [json.dumps({"key": "s0", "a": a, "b": b}) for a, b in rows]
    lines.insert(5, bad_line)
    src = tmp_path / name
    src.write_text("\n".join(lines) + "\n")
    summary, dead = _run_job(tmp_path, src, "--n_clusters", "2", "--batch_size", "10")
    assert summary["total_events"] == 20 and [d["reason"] for d in dead] == [reason]
