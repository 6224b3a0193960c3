"""The main job's inputs and outputs as a user joins them: event ids, integer keys, kept fields,
ignored fields, the dead-letter share's exit code, verbatim dead letters and their replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamrbf.cli import main as cli_main
from streamrbf.console import EXIT_TOO_MANY_DEAD_LETTERS
from streamrbf.jobs import cluster_events

pytestmark = pytest.mark.timeout(240)

FLAGS = ["--n_clusters", "2", "--batch_size", "10", "--quiet"]


def _xy(i: int) -> tuple[float, float]:
    """Two clusters, near (0, 100) and near (10, 0)."""
    return (0.1 * (i % 5), 100 + 0.1 * (i % 3)) if i % 2 else (10 + 0.1 * (i % 3), 0.1 * (i % 5))


def _read(out: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (out / name).read_text().splitlines() if line]


def _outputs(out: Path) -> tuple[list[dict], list[dict], dict]:
    return (_read(out, "assignments.jsonl"), _read(out, "dead_letters.jsonl"),
            json.loads((out / "summary.json").read_text()))


def _jsonl_lines() -> tuple[list[str], set[str]]:
    """Good events of streams 7 (an int key) and "a", with ids, a timestamp and a non-numeric
    field; then bad lines. Returns the lines and the ids of the bad ones."""
    lines = []
    for i in range(40):
        x, y = _xy(i)
        key: int | str = 7 if i % 4 < 2 else "a"
        lines.append(json.dumps({"id": f"e{i}", "key": key, "ts": f"2024-05-01T00:00:{i:02d}",
                                 "x": x, "y": y, "note": "free text"}))
    bad = {
        "e40": '{"id": "e40", "key": 7, "x": NaN, "y": 1.0, "ts": "t40"}',
        "e41": '{"id": "e41", "key": 7, "y": 1.0, "ts": "t41"}',  # a missing feature
        "e42": '{"id": "e42", "key": true, "x": 1.0, "y": 1.0}',  # a bool key
        "e43": '{"id": "e43", "key": 9, "x": 1.0, "y": 1.0}',  # a stream too short
        "e44": '{"id": "e44", "key": 7, "x": "1,5", "y": 1.0}',  # not a number
    }
    return lines + list(bad.values()), set(bad)


def test_jsonl_events_with_ids_join_back_to_their_lines(tmp_path):
    lines, bad_ids = _jsonl_lines()
    src = tmp_path / "events.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert cluster_events.main(["--input", str(src), "--output_dir", str(out),
                                "--id_field", "id", "--keep_fields", "ts",
                                "--features", "x,y", *FLAGS]) == 0
    assignments, dead, summary = _outputs(out)
    by_id = {json.loads(line)["id"]: line for line in lines}
    seen = [a["id"] for a in assignments] + [d["id"] for d in dead]
    assert sorted(seen) == sorted(by_id)  # every input line exactly once
    assert {d["id"] for d in dead} == bad_ids
    for a in assignments:
        event = json.loads(by_id[a["id"]])
        assert a["key"] == str(event["key"]) and a["ts"] == event["ts"]
        assert {"cluster", "distance", "temperature", "memberships"} <= set(a)
    assert {a["key"] for a in assignments} == {"7", "a"}
    for d in dead:
        assert d["event"] == by_id[d["id"]]  # verbatim
    reasons = {d["id"]: d["reason"] for d in dead}
    assert reasons["e40"] == "feature 'x' is NaN (a missing value)"
    assert reasons["e41"] == "missing feature 'x'"
    assert "'key'" in reasons["e42"] and "bool" in reasons["e42"]
    assert reasons["e43"].startswith("stream '9' ended with 1 events")
    assert reasons["e44"].startswith("feature 'x' is not a real number")
    keys = {d["id"]: d["key"] for d in dead}
    assert keys == {"e40": "7", "e41": "7", "e42": None, "e43": "9", "e44": "7"}
    assert summary["ignored_fields"] == {"note": 40}
    assert summary["total_events"] == 40 and summary["total_dead_letters"] == 5


def test_default_features_are_the_numeric_fields(tmp_path):
    # Without --features (nor --id_field) the ids and the text fields are not features.
    lines, _ = _jsonl_lines()
    src = tmp_path / "events.jsonl"
    src.write_text("\n".join(lines[:40]) + "\n")
    out = tmp_path / "out"
    assert cluster_events.main(["--input", str(src), "--output_dir", str(out), *FLAGS]) == 0
    assignments, dead, summary = _outputs(out)
    assert len(assignments) == 40 and dead == []
    assert summary["ignored_fields"] == {"id": 40, "note": 40, "ts": 40}
    assert "id" not in assignments[0]  # no --id_field: the outputs' fields as before


def test_csv_events_with_ids_join_back_to_their_records(tmp_path):
    header = "id,key,ts,x,y,label"
    rows = [f"c{i},{7 if i % 4 < 2 else 8},t{i},{_xy(i)[0]},{_xy(i)[1]},lab" for i in range(40)]
    bad = {"c40": "c40,7,t40,,1.0,lab", "c41": "c41,7,t41,abc,1.0,lab",
           "c42": "c42,9,t42,1.0,1.0,lab", "c43": "c43,7,t43,1.0"}
    rows += bad.values()
    src = tmp_path / "events.csv"
    src.write_text(header + "\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert cluster_events.main(["--input", str(src), "--output_dir", str(out),
                                "--id_field", "id", "--keep_fields", "ts",
                                "--features", "x,y", *FLAGS]) == 0
    assignments, dead, summary = _outputs(out)
    by_id = {row.split(",")[0]: row for row in rows}
    assert sorted([a["id"] for a in assignments] + [d["id"] for d in dead if d["id"]]
                  + ["c43"]) == sorted(by_id)
    for a in assignments:
        assert a["ts"] == "t" + a["id"][1:] and a["key"] in ("7", "8")
    assert len(assignments) == 40 and len(dead) == 4
    for d in dead:
        assert d["event"] in rows and d["csv_header"] == header
        if d["id"] is not None:
            assert d["event"] == by_id[d["id"]]
    reasons = {d["event"]: (d["key"], d["reason"]) for d in dead}
    assert reasons[bad["c40"]] == ("7", "feature 'x' is empty (a missing value)")
    assert reasons[bad["c41"]] == ("7", "feature 'x' is not a real number: 'abc'")
    assert reasons[bad["c42"]][0] == "9"
    assert reasons[bad["c43"]] == (None, "CSV row has 4 fields, header 6")
    assert summary["ignored_fields"] == {"label": 41}


def test_mostly_dead_letters_exit_with_their_own_code(tmp_path, capsys):
    lines = ['{"key": "s", "x": "oops"}'] * 30 + [
        json.dumps({"key": "s", "x": float(i % 2)}) for i in range(10)]
    src = tmp_path / "events.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    rc = cli_main(["run", "--input", str(src), "--output_dir", str(out), *FLAGS])
    assert rc == EXIT_TOO_MANY_DEAD_LETTERS == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("streamrbf run: error: too many dead letters: 30 of 40 events")
    assert "--max_dead_letter_share 0.5" in err[-1]
    _, dead, summary = _outputs(out)  # the outputs are written all the same
    assert len(dead) == 30 and summary["dead_letter_share"] == 0.75
    # the same run with a higher threshold, and a clean run: 0
    assert cli_main(["run", "--input", str(src), "--output_dir", str(out), *FLAGS,
                     "--max_dead_letter_share", "0.8"]) == 0
    src.write_text("\n".join(lines[30:]) + "\n")
    assert cli_main(["run", "--input", str(src), "--output_dir", str(out), *FLAGS]) == 0


def test_a_dead_letter_holds_its_line_verbatim(tmp_path):
    good = [json.dumps({"key": "s", "x": x, "y": y}).encode() for x, y in map(_xy, range(30))]
    bad = [b'{"key": "s", "x": NaN, "y": 1.0}', b'{"key": "s", "x": 1.0, "y": 2.0',
           b'{"key": "s", "y": 2.0}', b'\xef\xbb\xbf{"key": "s", "x": Infinity, "y": 1}',
           b'{"key": "s", "x": 1, "y": 2, "name": "caf\xff"}', b"  {\"key\": 7}\t"]
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"\n".join(good + bad) + b"\r\n")
    out = tmp_path / "out"
    assert cluster_events.main(["--input", str(src), "--output_dir", str(out),
                                "--features", "x,y", *FLAGS]) == 0
    _, dead, _ = _outputs(out)
    events = sorted(d["event"] for d in dead)
    # UTF-8 lines as they are (a BOM included, without the line end); a line that is not
    # UTF-8 decoded with U+FFFD for each bad byte
    expected = [b.decode("utf-8", "replace") for b in bad]
    assert events == sorted(expected)
    not_utf8 = next(d for d in dead if "\ufffd" in d["event"])
    assert not_utf8["reason"].startswith("not UTF-8")


def test_csv_dead_letter_is_its_record_verbatim(tmp_path):
    rows = [f"s,{x},{y}" for x, y in map(_xy, range(30))]
    bad = ['s,nan,1', 's,"1,5",2', "s, ,3", 's,1']
    src = tmp_path / "events.csv"
    src.write_text("key,x,y\n" + "\n".join(rows + bad) + "\n")
    out = tmp_path / "out"
    assert cluster_events.main(["--input", str(src), "--output_dir", str(out),
                                "--features", "x,y", *FLAGS]) == 0
    _, dead, _ = _outputs(out)
    assert sorted(d["event"] for d in dead) == sorted(bad)
    assert {d["key"] for d in dead if d["event"] != "s,1"} == {"s"}
    assert all("'x'" in d["reason"] for d in dead if d["event"] != "s,1")


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_replaying_fixed_dead_letters_clusters_them(tmp_path, kind):
    if kind == "jsonl":
        good = [json.dumps({"id": i, "key": "s", "x": x, "y": y})
                for i, (x, y) in enumerate(map(_xy, range(30)))]
        bad = [json.dumps({"id": 100 + i, "key": 5, "x": "?", "y": y})
               for i, (_, y) in enumerate(map(_xy, range(4)))]
        text = "\n".join(good + bad) + "\n"
    else:
        good = [f"{i},s,{x},{y}" for i, (x, y) in enumerate(map(_xy, range(30)))]
        bad = [f"{100 + i},5,?,{y}" for i, (_, y) in enumerate(map(_xy, range(4)))]
        text = "id,key,x,y\n" + "\n".join(good + bad) + "\n"
    src = tmp_path / f"events.{kind}"
    src.write_text(text)
    out, again = tmp_path / "out", tmp_path / "again"
    flags = ["--id_field", "id", "--features", "x,y", *FLAGS]
    assert cluster_events.main(["--input", str(src), "--output_dir", str(out), *flags]) == 0
    dead = _read(out, "dead_letters.jsonl")
    assert len(dead) == 4
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text("".join(
        json.dumps({**d, "event": d["event"].replace('"?"', "0.5").replace("?", "0.5")}) + "\n"
        for d in dead))
    assert cli_main(["replay", str(fixed), "--output_dir", str(again), *flags]) == 0
    assignments, dead_again, summary = _outputs(again)
    assert dead_again == [] and len(assignments) == 4
    assert sorted(str(a["id"]) for a in assignments) == ["100", "101", "102", "103"]
    assert {a["key"] for a in assignments} == {"5"}
    assert summary["total_events"] == 4


def test_contradicting_field_flags_are_usage_errors(capsys):
    assert cli_main(["run", "--features", "x,id", "--id_field", "id"]) == 2
    assert "cannot also be a feature" in capsys.readouterr().err
    assert cli_main(["run", "--keep_fields", "cluster"]) == 2
    assert "output field" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_a_model_stage_dead_letter_of_a_long_line_is_verbatim(tmp_path, kind):
    # The model stage refuses the lone event of stream "z" (fewer than n_clusters events); its
    # line, over 3000 characters, comes back whole (not the 2000 characters of a DeadLetter).
    note = "n" * 3500
    if kind == "jsonl":
        lines = [json.dumps({"id": f"e{i}", "key": "s", "x": x, "y": y, "note": "-"})
                 for i, (x, y) in enumerate(map(_xy, range(30)))]
        long_line = json.dumps({"id": "long", "key": "z", "x": 1.0, "y": 2.0, "note": note})
        text = "\n".join([*lines, long_line]) + "\n"
    else:
        lines = [f"e{i},s,{x},{y},-" for i, (x, y) in enumerate(map(_xy, range(30)))]
        long_line = f'long,z,1.0,2.0,"{note}"'
        text = "id,key,x,y,note\n" + "\n".join([*lines, long_line]) + "\n"
    assert len(long_line) > 3000
    src = tmp_path / f"events.{kind}"
    src.write_text(text)
    out = tmp_path / "out"
    assert cluster_events.main(["--input", str(src), "--output_dir", str(out),
                                "--id_field", "id", "--keep_fields", "note", *FLAGS]) == 0
    [dead] = _read(out, "dead_letters.jsonl")
    assert dead["stage"] == "model" and dead["id"] == "long" and dead["key"] == "z"
    assert dead["event"] == long_line
    assert dead.get("csv_header", "id,key,x,y,note") == "id,key,x,y,note"


def _acceptance_input(kind: str) -> tuple[str, dict[str, str], set[str]]:
    """Events with ids, integer keys, a timestamp and a non-numeric field, some of them bad
    (a NaN, a missing or non-numeric feature, a bad key, a stream too short to cluster): the
    file's text, each id's input line (JSONL) or record (CSV), and the ids of the bad ones."""
    if kind == "jsonl":
        lines = {f"e{i}": json.dumps({"id": f"e{i}", "key": 7 if i % 4 < 2 else 8,
                                      "ts": f"2024-05-01T00:00:{i:02d}Z", "x": _xy(i)[0],
                                      "y": _xy(i)[1], "label": "free text"})
                 for i in range(40)}
        bad = {"b0": '{"id": "b0", "key": 7, "ts": "t", "x": NaN, "y": 1.0, "label": "l"}',
               "b1": '{"id": "b1", "key": 7, "ts": "t", "y": 1.0, "label": "l"}',
               "b2": '{"id": "b2", "key": 8, "ts": "t", "x": "1,5", "y": 1.0}',
               "b3": '{"id": "b3", "key": 1.5, "ts": "t", "x": 1.0, "y": 1.0}',
               "b4": '{"id": "b4", "key": 9, "ts": "t", "x": 1.0, "y": 1.0}'}
        head = ""
    else:
        lines = {f"c{i}": f"c{i},{7 if i % 4 < 2 else 8},2024-05-01T00:00:{i:02d}Z,"
                          f"{_xy(i)[0]},{_xy(i)[1]},free text" for i in range(40)}
        bad = {"d0": "d0,7,t,,1.0,l", "d1": "d1,7,t,abc,1.0,l", "d2": 'd2,8,t,"1,5",1.0,l',
               "d3": "d3,,t,1.0,1.0,l", "d4": "d4,9,t,1.0,1.0,l"}
        head = "id,key,ts,x,y,label\n"
    lines.update(bad)
    return head + "\n".join(lines.values()) + "\n", lines, set(bad)


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_acceptance_every_input_line_joins_back_exactly_once(tmp_path, kind, capsys):
    # issue 15's acceptance: `streamrbf run` (the CLI, the default FnApiRunner) on ids, integer
    # keys, a kept timestamp and a non-numeric field; every line is one assignment or one dead
    # letter, found by its id; a dead letter's event is the line (or CSV record) byte for byte.
    text, by_id, bad_ids = _acceptance_input(kind)
    src = tmp_path / f"events.{kind}"
    src.write_bytes(text.encode())
    out = tmp_path / "out"
    assert cli_main(["run", "--input", str(src), "--output_dir", str(out), "--id_field", "id",
                     "--keep_fields", "ts", "--features", "x,y", "--n_clusters", "2",
                     "--batch_size", "10", "--no-progress"]) == 0
    assignments, dead, summary = _outputs(out)
    seen = [a["id"] for a in assignments] + [d["id"] for d in dead]
    assert sorted(seen) == sorted(by_id)  # every line exactly once
    assert {d["id"] for d in dead} == bad_ids
    for a in assignments:
        line = by_id[a["id"]]
        expected_ts = (json.loads(line)["ts"] if kind == "jsonl" else line.split(",")[2])
        assert a["ts"] == expected_ts and a["key"] in ("7", "8")
    for d in dead:
        assert d["event"] == by_id[d["id"]]  # byte-identical (the file is UTF-8)
        assert d["event"].encode() in text.encode()
    assert {d["id"]: d["stage"] for d in dead}[("b4" if kind == "jsonl" else "d4")] == "model"
    assert set(summary["ignored_fields"]) == {"label"}  # (the non-numeric field)
    assert "label" in (out / "summary.md").read_text()
    assert "events clustered" in capsys.readouterr().out
