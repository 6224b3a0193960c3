"""Cluster keyed event streams with one annealed RBF K-Means model per stream.

This is the main job: ``streamrbf run`` (or ``streamrbf`` alone, or ``python -m
streamrbf.jobs.cluster_events``, or ``python -m pipelines.cluster_events`` from a clone);
``streamrbf run --help`` lists the flags. With no arguments it clusters a built-in generator of
several keyed streams whose clusters drift; ``--input`` reads JSON lines (``*.jsonl``,
``*.json``) or CSV files (each with its own header line) instead, one event per line with a key
field and numeric features. ``--input_subscription`` / ``--input_topic`` read JSON events
from Pub/Sub (a streaming job; needs ``apache-beam[gcp]``). Every other flag goes to Beam
(``--runner``, ``--streaming``, Dataflow / Flink options; see :func:`beam_options` for unknown
flags); the runner defaults to the in-process ``FnApiRunner``.

Writes to ``--output_dir`` (default ``./streamrbf-output``) the files of
:data:`~streamrbf.jobs.run_flags.OUTPUTS`: ``assignments.jsonl``, ``dead_letters.jsonl``,
``snapshots.jsonl`` (each stream's model after its steps), ``sample.jsonl``, ``summary.json`` and
``summary.md`` (the run as a report, :func:`summarise`), ``clusters.png`` and ``models/`` (each
stream's final model file).

While the pipeline runs, a progress bar on stderr (only when stderr is a terminal; never with
``--no-progress`` or ``--quiet``) counts the events processed (clustered or dead-lettered) and
shows how many streams have a model and their temperature range. It costs one attribute increment
per event, in the steps that already turn each output into JSON; a thread in the driver polls the
counters. So it needs the DoFns in the driver's process: the default FnApiRunner and the
DirectRunner, not in multi-processing mode; other runners get no bar (their own consoles show
progress).

Exit codes (see :mod:`streamrbf.console`): 0 success; 1 the work failed (``--input`` matches no
file, an unreadable input or unwritable output, an error in the pipeline); 2 bad usage (an unknown
flag, for Beam too, or a bad value); 4 too many dead letters (``--max_dead_letter_share``); 130
interrupted.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import functools
import hashlib
import importlib
import io
import json
import os
import re
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from ..beam import ClusterPerKey, DeadLetter
from ..beam.dead_letters import _utf8_safe, is_utf8_text, parse_features
from ..console import (
    EXIT_TOO_MANY_DEAD_LETTERS,
    CommandError,
    progress_bar,
    progress_enabled,
    run_command,
)
from .run_flags import check_run_flags, run_parser

__all__ = ["build_pipeline", "generate_events", "main", "model_file_name", "normalise_key",
           "reason_group", "replay", "summarise", "unknown_beam_flags"]


def generate_events(
    n_streams: int = 4,
    events_per_stream: int = 2000,
    n_clusters: int = 3,
    n_features: int = 2,
    drift: float = 3.0,
    bad_fraction: float = 0.005,
    seed: int = 0,
) -> list[str]:
    """JSON lines of keyed events: each stream has ``n_clusters`` Gaussian clusters whose centres
    drift by ``drift`` (in units of the cluster spread x 10) over the stream; a ``bad_fraction``
    of events is broken (NaN, a missing feature, unparseable text) to exercise the dead letters.

    Parameters
    ----------
    n_streams
        Number of keyed streams (keys ``stream-0``, ``stream-1``, ...).
    events_per_stream
        Events in each stream.
    n_clusters
        Gaussian clusters per stream.
    n_features
        Features of each event (``f0``, ``f1``, ...).
    drift
        How far the cluster centres move over a stream.
    bad_fraction
        Share of broken events.
    seed
        Seed of every random choice.

    Returns
    -------
    list of str
        One JSON line per event, the streams interleaved.

    Examples
    --------
    >>> lines = generate_events(2, 5, bad_fraction=0.0)
    >>> len(lines), sorted(json.loads(lines[0]))
    (10, ['f0', 'f1', 'key'])
    """
    rng = np.random.default_rng(seed)
    names = [f"f{j}" for j in range(n_features)]
    streams = []
    for s in range(n_streams):
        base = rng.uniform(-10, 10, (n_clusters, n_features))
        direction = rng.normal(0, 1, (n_clusters, n_features))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        streams.append((f"stream-{s}", base, direction))
    lines = []
    for i in range(events_per_stream):
        t = i / max(events_per_stream - 1, 1)
        for key, base, direction in streams:
            c = rng.integers(n_clusters)
            x = base[c] + drift * t * direction[c] + rng.normal(0, 0.4, n_features)
            event: dict[str, Any] = {"key": key, **dict(zip(names, np.round(x, 4).tolist()))}
            u = rng.random()
            if u < bad_fraction / 3:
                event[names[0]] = float("nan")
            elif u < 2 * bad_fraction / 3:
                del event[names[-1]]
            elif u < bad_fraction:
                lines.append("{broken json " + key)
                continue
            lines.append(json.dumps(event))
    return lines


def _file_key(path: str) -> str:
    """``path`` as the key of :func:`_csv_headers`' map: absolute for a local file (Beam's
    ReadFromText names ``x.csv`` ``./x.csv``), as it is for a remote one (``gs://...``)."""
    return path if "://" in path else os.path.abspath(path)


def _csv_header_of(line: bytes) -> list[str] | str:
    """The column names in a CSV file's first line (UTF-8, a byte order mark dropped), or why
    the line is not a header.

    Examples
    --------
    >>> _csv_header_of(b"\\xef\\xbb\\xbfkey,a,b\\r\\n")   # Excel's CSV: a BOM, CRLF
    ['key', 'a', 'b']
    >>> _csv_header_of(b"\\n"), _csv_header_of(b"key,a,a\\n")
    ('no header line (a CSV file starts with one)', "header repeats column 'a'")
    """
    try:
        text = line.decode("utf-8-sig")
        if not text.strip():
            return "no header line (a CSV file starts with one)"
        names = next(csv.reader([text]))
    except (UnicodeDecodeError, csv.Error) as err:
        return f"unreadable header line: {err}"
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        return f"header repeats column {repeated[0]!r}"
    return names


def _csv_headers(files: Sequence[Any]) -> dict[str, list[str] | str]:
    """Each CSV file's header (its first line), by :func:`_file_key`: its column names, or why
    its rows are refused. ``CommandError`` when no file starts with a header line."""
    from apache_beam.io.filesystems import FileSystems

    headers: dict[str, list[str] | str] = {}
    for meta in files:
        with FileSystems.open(meta.path) as f:
            header = _csv_header_of(f.readline())
        headers[_file_key(meta.path)] = (
            header if isinstance(header, list) else f"{meta.path}: {header}")
    if not any(isinstance(h, list) for h in headers.values()):
        raise CommandError(f"{files[0].path!r} has no header line: a CSV input starts with one")
    return headers


# Internal: the field of the events given to ClusterPerKey that carries each event's reference
# (JSON text of [its input line, id, kept fields, CSV header line, feature values]);
# ClusterPerKey's id_field, so it comes back as each assignment's and model-stage dead letter's
# event id.
_REF = "__streamrbf_ref__"
# Beam counters of the fields that were not features, by name (the summary's ignored_fields).
_IGNORED = "streamrbf.ignored_fields"
# Beam counters of the events' feature names, by their JSON list (the model files' names).
_FEATURE_NAMES = "streamrbf.feature_names"
# ClusterPerKey's counters of drift alarms and restarts (namespace, names).
_DRIFT = ("streamrbf", ("drift_alarms", "drift_restarts"))


def _line_text(line: bytes | str) -> tuple[str, str | None]:
    """An input line as the text a dead letter keeps (verbatim, a byte order mark included;
    not UTF-8: decoded with U+FFFD replacing each bad byte) and why it cannot be read (None:
    it can).

    Examples
    --------
    >>> _line_text(b'{"x": 1}'), _line_text(b"\\xff{}")[0]
    (('{"x": 1}', None), '\\ufffd{}')
    """
    if isinstance(line, str):
        return line, None
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError as err:
        return line.decode("utf-8", "replace"), f"not UTF-8: {err}"


def normalise_key(value: Any, key_field: str = "key") -> str:
    """An event's key as the job uses it: a non-empty str as it is, an int as its decimal text
    (``7`` -> ``"7"``: the int 7 and the text "7" are the same stream); anything else (a bool, a
    float, null, a list, an empty str) is refused with a ``ValueError`` naming the field.

    Parameters
    ----------
    value
        The key field's value, as parsed from the event.
    key_field
        The field's name, for the error message.

    Returns
    -------
    str
        The stream's key.

    Examples
    --------
    >>> normalise_key("user-7"), normalise_key(7), normalise_key(-3)
    ('user-7', '7', '-3')
    >>> normalise_key(True)
    Traceback (most recent call last):
    ...
    ValueError: key field 'key' must be a non-empty string or an integer, got bool True
    """
    if isinstance(value, str) and value:
        if not is_utf8_text(value):
            raise ValueError(f"key field {key_field!r} is not valid Unicode text: {value!r}")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # (a ValueError for an int of over 4300 digits)
    what = "an empty string" if value == "" else f"{type(value).__name__} {_short(value)}"
    raise ValueError(f"key field {key_field!r} must be a non-empty string or an integer, "
                     f"got {what}")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _event_id(value: Any, id_field: str) -> str | int:
    """An event's id: a str or an int (not a bool), as it is."""
    if isinstance(value, str):
        if not is_utf8_text(value):
            raise ValueError(f"id field {id_field!r} is not valid Unicode text: {value!r}")
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() <= 1024:
        return value
    raise ValueError(f"id field {id_field!r} must be a string or an integer, got "
                     f"{type(value).__name__} {_short(value)}")


def _csv_value(name: str, cell: str) -> float:
    """A CSV cell of feature ``name`` as a number, or a ``ValueError`` naming the column."""
    if not cell.strip():
        raise ValueError(f"feature {name!r} is empty (a missing value)")
    try:
        return float(cell)
    except ValueError:
        raise ValueError(f"feature {name!r} is not a real number: {_short(cell)}") from None


def _is_number(value: Any) -> bool:
    return type(value) is float or type(value) is int  # (JSON's numbers; not a bool)


class _ParseLine(beam.DoFn):
    """A JSON or CSV line (text, or UTF-8 bytes) -> ``(key, features)``, the features a dict
    that also carries the event's reference (:data:`_REF`: its line, id and kept fields, as
    JSON text) for the outputs; a line that cannot be read (not UTF-8, blank, bad JSON or CSV,
    no or a bad key, a bad id, a missing or bad feature) becomes a dead letter (a dict, see
    :meth:`dead`) holding the line verbatim, the key when it was readable, and the reason.

    The features are those named by ``features``, or, with None, the event's numeric fields
    (not the key, id and kept fields; in CSV, the cells that read as numbers); the other fields
    are ignored, and counted by name (Beam counters, namespace :data:`_IGNORED`).

    With ``csv_headers`` (:func:`_csv_headers`) the elements are ``(file name, line)`` and each
    row is read with its own file's header.

    Examples
    --------
    >>> parse = _ParseLine("key", {_file_key("a.csv"): ["key", "x"]})
    >>> [(k, f["x"]) for k, f in parse.process(("a.csv", b"s0,1.5"))]
    [('s0', 1.5)]
    >>> [out.value["reason"] for out in parse.process(("a.csv", b""))]
    ['blank line']
    >>> [out.value["reason"] for out in _ParseLine("key").process(b"\\xff{}")]
    ["not UTF-8: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"]
    >>> [(out.value["key"], out.value["reason"])
    ...  for out in _ParseLine("key", features=["x"]).process('{"key": 7, "x": NaN}')]
    [('7', "feature 'x' is NaN (a missing value)")]
    """

    def __init__(self, key_field: str,
                 csv_headers: dict[str, list[str] | str] | None = None,
                 features: Sequence[str] | None = None, id_field: str | None = None,
                 keep_fields: Sequence[str] = ()) -> None:
        self.key_field = key_field
        self.csv_headers = csv_headers
        # each file's header as the CSV line dead letters and references carry (made once)
        self._header_lines = {k: _csv_line(h) for k, h in (csv_headers or {}).items()
                              if isinstance(h, list)}
        self.features = None if features is None else tuple(features)
        self.id_field = id_field
        self.keep_fields = tuple(keep_fields)
        self._not_features = {key_field, *self.keep_fields} | (
            set() if id_field is None else {id_field})
        self._ignored: dict[str, int] = {}
        self._names: dict[tuple[str, ...] | None, int] = {}

    def start_bundle(self) -> None:
        self._ignored = {}
        self._names = {}

    def finish_bundle(self) -> None:
        for name, n in self._ignored.items():
            beam.metrics.Metrics.counter(_IGNORED, name).inc(n)
        for names, n in self._names.items():
            beam.metrics.Metrics.counter(_FEATURE_NAMES, json.dumps(names)).inc(n)
        self._ignored = {}
        self._names = {}

    def dead(self, key: str | None, text: str, reason: str, event_id: Any = None,
             header_line: str | None = None) -> beam.pvalue.TaggedOutput:
        """A parse-stage dead letter: ``key``, ``event`` (the line, verbatim), ``reason``,
        ``stage``; ``id`` with an id field; ``csv_header`` (the columns of the line's file, as
        a CSV line) for CSV input."""
        letter: dict[str, Any] = DeadLetter(key, _utf8_safe(text), _utf8_safe(reason),
                                            "parse")._asdict()
        if self.id_field is not None:
            letter["id"] = event_id
        if self.csv_headers is not None:
            letter["csv_header"] = header_line
        return beam.pvalue.TaggedOutput("dead_letters", letter)

    def _fields(self, line: str, header: list[str] | str | None) -> dict[str, Any]:
        if not line or line.isspace():
            raise ValueError("blank line")
        if isinstance(header, str):  # the file's header line was refused
            raise ValueError(header)
        if header is not None:
            row = next(csv.reader([line]))
            if len(row) != len(header):
                raise ValueError(f"CSV row has {len(row)} fields, header {len(header)}")
            return dict(zip(header, row))
        event = json.loads(line, parse_constant=float)
        if not isinstance(event, dict):
            raise ValueError(f"event is a JSON {type(event).__name__}, not an object")
        return event

    def _features(self, fields: dict[str, Any], csv_row: bool) -> dict[str, Any]:
        ignored = self._ignored
        out: dict[str, Any] = {}
        if self.features is not None:
            for name in self.features:
                if name not in fields:
                    raise ValueError(f"missing feature {name!r}")
                value = fields[name]
                out[name] = _csv_value(name, value) if csv_row else value
            chosen = set(self.features)
            for name in fields:
                if name not in chosen and name not in self._not_features:
                    ignored[name] = ignored.get(name, 0) + 1
            return out
        for name, value in fields.items():
            if name in self._not_features:
                continue
            if csv_row:
                try:
                    value = float(value) if value.strip() else None
                except ValueError:
                    value = None
            if value is not None and _is_number(value):
                out[name] = value
            else:
                ignored[name] = ignored.get(name, 0) + 1
        if not out:
            raise ValueError("event has no numeric fields (no features)")
        return out

    def process(self, element: Any) -> Iterable[Any]:
        line, header, header_line = element, None, None
        if self.csv_headers is not None:
            path, line = element
            file_key = _file_key(path)
            header = self.csv_headers.get(
                file_key, f"{path}: not among the files matched when the job started")
            header_line = self._header_lines.get(file_key)
        text, unreadable = _line_text(line)
        key = event_id = None
        try:
            if unreadable:
                raise ValueError(unreadable)
            body = text[1:] if text.startswith("\ufeff") else text  # (a BOM starts a file)
            fields = self._fields(body, header)
            # The key and the id are both read when they can be: a dead letter carries them.
            errors = []
            try:
                if self.key_field not in fields:
                    raise ValueError(f"event has no {self.key_field!r} field")
                key = normalise_key(fields[self.key_field], self.key_field)
            except ValueError as err:
                errors.append(err)
            if self.id_field is not None:
                try:
                    if self.id_field not in fields:
                        raise ValueError(f"event has no {self.id_field!r} field (the id)")
                    event_id = _event_id(fields[self.id_field], self.id_field)
                except ValueError as err:
                    errors.append(err)
            if errors:
                raise errors[0]
            kept = {name: fields.get(name) for name in self.keep_fields}
            features = self._features(fields, header is not None)
            names, values = parse_features(features, self.features)
            event = dict(zip(names, values))
            event[_REF] = json.dumps([text, event_id, kept, header_line, values])
            self._names[names] = self._names.get(names, 0) + 1
            yield key, event
        except RecursionError:
            yield self.dead(key, text, "JSON nested too deeply", event_id, header_line)
        except (ValueError, TypeError, csv.Error) as err:
            yield self.dead(key, text, str(err), event_id, header_line)


def _csv_line(names: Sequence[str]) -> str:
    """Column names as one CSV line (no line end)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(names)
    return buf.getvalue()


# ------------------------------------------------------------------------------- progress
# Boards of the runs in progress, by run id. DoFns find theirs through the importable module (not
# through their own globals: a DoFn class defined in __main__ travels by value, with a copy).
_BOARDS: dict[str, _Board] = {}


def _boards() -> dict[str, _Board]:
    try:
        return importlib.import_module("streamrbf.jobs.cluster_events")._BOARDS
    except ImportError:  # a remote worker without the package: no board, no progress
        return {}


class _Board:
    """What the progress bar shows: the counting DoFns of one run and each stream's last state."""

    def __init__(self) -> None:
        self.counters: list[Any] = []
        self.streams: dict[str, tuple[int, float]] = {}  # key -> (events seen, temperature)

    def count(self) -> int:
        return sum(c.n for c in list(self.counters))

    def describe(self) -> str:
        streams = list(self.streams.values())
        if not streams:
            text = "first batches" if self.counters else "starting Beam"
        else:
            temps = [t for _, t in streams]
            lo, hi = min(temps), max(temps)
            t = f"T {lo:.2g}" if lo == hi else f"T {lo:.2g}..{hi:.2g}"
            text = f"{len(streams)} stream{'s' * (len(streams) != 1)}, {t}"
        return text.ljust(24)  # a steady width: the bar does not jump as the text changes


class _CountedJson(beam.DoFn):
    """``to_json(element)`` with a count of the elements for the progress bar (one attribute
    increment per element; the driver polls ``n``)."""

    def __init__(self, to_json: Any, run_id: str) -> None:
        self.to_json = to_json
        self.run_id = run_id
        self.n = 0

    def setup(self) -> None:
        self.n = 0
        board = _boards().get(self.run_id)
        if board is not None:
            board.counters.append(self)

    def process(self, element: Any) -> Iterable[str]:
        self.n += 1
        return (self.to_json(element),)


class _SnapshotJson(beam.DoFn):
    """A snapshot as JSON; also posts the stream's events seen and temperature to the board."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def setup(self) -> None:
        self.board = _boards().get(self.run_id)

    def process(self, s: Any) -> Iterable[str]:
        if self.board is not None:
            self.board.streams[s.key] = (s.n_seen, s.temperature)
        return (json.dumps(s._asdict()),)


class _ProgressBar:
    """A tqdm bar on stderr fed by a board, polled by a daemon thread (4 times a second)."""

    def __init__(self, board: _Board, total: int | None) -> None:
        self.board = board
        # "events  45%|####     | 3.60k/8.00k [00:01<00:02, 2.40k/s, 4 streams, T 0.31..0.9]"
        if total:
            fmt = ("{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                   "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")
        else:  # unknown total (remote files, Pub/Sub): a counter
            fmt = "{desc}: {n_fmt} [{elapsed}, {rate_fmt}{postfix}]"
        self.bar = progress_bar(total=total, desc="events", unit="", unit_scale=True,
                                bar_format=fmt, smoothing=0.1, mininterval=0.25)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="streamrbf-progress", daemon=True)
        self._thread.start()

    def _update(self) -> None:
        self.bar.set_postfix_str(self.board.describe(), refresh=False)
        n = self.board.count()
        if n > self.bar.n:
            self.bar.update(n - self.bar.n)
        else:
            self.bar.refresh()

    def _poll(self) -> None:
        while not self._stop.wait(0.25):
            self._update()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._update()
        self.bar.close()


def _assignment_json(kv: tuple[str, Any], with_id: bool = False, keep: bool = False) -> str:
    """An assignment as one JSON line: key, cluster, distance, temperature, memberships; then
    ``id`` (``with_id``) and the kept fields (``keep``), from the event's reference."""
    key, a = kv
    out = {"key": key, "cluster": a.cluster, "distance": round(a.distance, 6),
           "temperature": a.temperature,
           "memberships": {str(k): round(v, 6) for k, v in a.memberships.items()}}
    if (with_id or keep) and isinstance(a.event_id, str):
        _, event_id, kept, *_ = json.loads(a.event_id)
        if with_id:
            out["id"] = event_id
        if keep:
            out.update(kept)
    return json.dumps(out)


def _model_dead_letter(d: DeadLetter, with_id: bool = False, csv_input: bool = False
                       ) -> dict[str, Any]:
    """A dead letter of :class:`~streamrbf.beam.ClusterPerKey` as the job writes it: its event
    replaced by the input line (and ``id``, ``csv_header``) that its reference names (the
    letter's ``event_id``, see :data:`_REF`), however long the line.

    Examples
    --------
    >>> ref = json.dumps(['{"key": "a", "x": 1e300}', "e1", {}, None, [1e300]])
    >>> d = DeadLetter("a", "(truncated)", "too large", "model", ref)
    >>> _model_dead_letter(d, with_id=True)
    {'key': 'a', 'event': '{"key": "a", "x": 1e300}', 'reason': 'too large', 'stage': 'model', \
'id': 'e1'}
    """
    ref = None
    if isinstance(d.event_id, str):
        try:
            ref = json.loads(d.event_id)
        except ValueError:
            ref = None
    if not (isinstance(ref, list) and len(ref) == 5 and isinstance(ref[0], str)):
        ref = None
    text, event_id, header = (d.event, None, None) if ref is None else (ref[0], ref[1], ref[3])
    letter: dict[str, Any] = {"key": d.key, "event": text, "reason": d.reason, "stage": d.stage}
    if with_id:
        letter["id"] = event_id
    if csv_input:
        letter["csv_header"] = header
    return letter


def _input_files(pattern: str) -> list[Any]:
    """The files ``pattern`` matches (Beam file systems: local, gs://, ...), sorted by path;
    ``FileNotFoundError`` when there are none."""
    from apache_beam.io.filesystems import FileSystems

    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except Exception as err:  # Beam raises several types (BeamIOError, ValueError, ...)
        raise CommandError(f"cannot list --input {pattern!r}: {' '.join(str(err).split())}"
                           ) from None
    if not found:
        raise FileNotFoundError(f"--input {pattern!r} matches no file")
    return sorted(found, key=lambda m: m.path)


def _count_lines(files: Sequence[Any], skip_header: bool) -> int | None:
    """Lines in local ``files`` (the progress bar's total); None for remote ones."""
    total = 0
    for meta in files:
        path = Path(meta.path)
        if "://" in meta.path or not path.is_file():
            return None
        n, last = 0, b"\n"
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                n += chunk.count(b"\n")
                last = chunk[-1:]
        n += last != b"\n"  # a last line without a newline
        total += n - (1 if skip_header and n else 0)
    return total


def build_pipeline(
    p: beam.Pipeline, args: argparse.Namespace, streaming: bool, run_id: str = ""
) -> None:
    """Attach the job to ``p``: read, cluster per key, write the outputs.

    ``args`` are the flags of ``streamrbf run`` (:func:`~streamrbf.jobs.run_flags.run_parser`);
    ``run_id`` names the progress board that the counting steps report to (none: no progress).

    Events come from Pub/Sub, from JSON-lines or CSV files, or from the built-in generator;
    each stream is clustered by :class:`~streamrbf.beam.ClusterPerKey` (a snapshot every step),
    and the assignments, dead letters (of parsing and of clustering) and snapshots are written
    as JSON lines to ``assignments.jsonl``, ``dead_letters.jsonl`` and ``snapshots.jsonl`` in
    ``args.output_dir``.

    Parameters
    ----------
    p
        The pipeline to attach the job to.
    args
        The parsed flags of ``streamrbf run``.
    streaming
        Whether the pipeline runs in streaming mode: its output files are then sharded (bounded
        runs write exactly one file each).
    run_id
        The progress board's id, or ``""`` for no progress.

    Examples
    --------
    >>> args = run_parser().parse_args(["--streams", "1", "--events_per_stream", "50"])
    >>> with beam.Pipeline() as p:  # doctest: +SKIP
    ...     build_pipeline(p, args, streaming=False)
    """
    out = Path(args.output_dir)
    features = _names(getattr(args, "features", None))
    id_field = getattr(args, "id_field", None)
    keep = _names(getattr(args, "keep_fields", None)) or ()
    csv_input = False
    if args.input_subscription or args.input_topic:
        lines = p | "ReadPubSub" >> beam.io.ReadFromPubSub(
            topic=args.input_topic, subscription=args.input_subscription)
        headers = None
    elif args.input:
        # Bytes, decoded by the parser: a line that is not UTF-8 is a dead letter, not a crash.
        if args.input.lower().endswith(".csv"):  # each file's rows under its own header line
            csv_input = True
            headers = _csv_headers(_input_files(args.input))
            lines = p | "ReadFiles" >> beam.io.ReadFromTextWithFilename(
                args.input, skip_header_lines=1, coder=beam.coders.BytesCoder())
        else:
            lines = p | "ReadFiles" >> beam.io.ReadFromText(
                args.input, coder=beam.coders.BytesCoder())
            headers = None
    else:
        lines = p | "Generate" >> beam.Create(generate_events(
            args.streams, args.events_per_stream, args.n_clusters,
            bad_fraction=getattr(args, "bad_fraction", 0.005), seed=args.seed))
        headers = None
    parser = _ParseLine(args.key_field, headers, features, id_field, keep)
    parsed = lines | "ParseLines" >> beam.ParDo(parser).with_outputs("dead_letters", main="events")
    # Each event carries its reference (line, id, kept fields) as ClusterPerKey's event id.
    result = parsed.events | "ClusterPerKey" >> ClusterPerKey(
        args.n_clusters, batch_size=args.batch_size, snapshot_every=1,
        feature_names=features, id_field=_REF,
        temperature_decay=args.temperature_decay, half_life=args.half_life,
        random_state=args.seed,
    )
    model_dead = result.dead_letters | "ModelDeadLetters" >> beam.Map(
        _model_dead_letter, id_field is not None, csv_input)
    dead = (parsed.dead_letters, model_dead) | "AllDeadLetters" >> beam.Flatten()
    suffix = {} if streaming else {"shard_name_template": ""}
    to_json = functools.partial(_assignment_json, with_id=id_field is not None, keep=bool(keep))
    (result.assignments
     | "AssignmentJson" >> beam.ParDo(_CountedJson(to_json, run_id))
     | "WriteAssignments" >> beam.io.WriteToText(str(out / "assignments.jsonl"), **suffix))
    (dead | "DeadLetterJson" >> beam.ParDo(_CountedJson(json.dumps, run_id))
     | "WriteDeadLetters" >> beam.io.WriteToText(str(out / "dead_letters.jsonl"), **suffix))
    (result.snapshots | "SnapshotJson" >> beam.ParDo(_SnapshotJson(run_id))
     | "WriteSnapshots" >> beam.io.WriteToText(str(out / "snapshots.jsonl"), **suffix))
    if not streaming:  # (a sample per key needs the end of the input)
        (result.assignments
         | "SampleItems" >> beam.Map(_sample_item)
         | "SamplePerStream" >> beam.combiners.Sample.FixedSizePerKey(_SAMPLE_PER_STREAM)
         | "SampleJson" >> beam.FlatMap(_sample_json)
         | "WriteSample" >> beam.io.WriteToText(str(out / "sample.jsonl"), **suffix))


def _names(text: str | None) -> list[str] | None:
    """A comma-separated list of field names (None for none)."""
    return None if not text else [n.strip() for n in text.split(",")]


def _read_jsonl(pattern: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(pattern.parent.glob(pattern.name + "*")):
        with open(path) as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    return rows


# Events per stream that sample.jsonl keeps (the points of clusters.png); streams drawn there;
# streams whose centres summary.md lists (all of them are in summary.json).
_SAMPLE_PER_STREAM = 200
_MAX_PANELS = 8
_MAX_CENTRE_TABLES = 20


def _sample_json(kv: tuple[str, Iterable[tuple[str, int]]]) -> Iterable[str]:
    """The sampled assignments of a stream (their references and clusters) as JSON lines: key,
    cluster, features (the values the model saw), and id when the event has one."""
    key, items = kv
    for ref, cluster in items:
        _, event_id, _, _, values = json.loads(ref)
        row = {"key": key, "cluster": cluster, "features": values}
        if event_id is not None:
            row["id"] = event_id
        yield json.dumps(row)


def _sample_item(kv: tuple[str, Any]) -> tuple[str, tuple[str, int]]:
    return kv[0], (kv[1].event_id, kv[1].cluster)


_NOT_WORD_QUOTED = re.compile(r"""(?<!\w)('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")(?!\w)""")
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)(?![\w.])")
# Quoted text after these words, or in a list, is a name (kept); other quoted text is a value.
_NAMES_AFTER = ("feature ", "field ", "column ", "Expecting ", "[", "', ")


def reason_group(reason: str) -> str:
    """A dead letter's reason with its values stripped, so that like reasons count together:
    quoted values become ``'…'`` (a quoted name after "feature", "field" or "column", or in a
    list, stays) and numbers ``N``.

    Parameters
    ----------
    reason
        The reason of a dead letter.

    Returns
    -------
    str
        The reason's group.

    Examples
    --------
    >>> reason_group("feature 'x' is not a real number: 'abc'")
    "feature 'x' is not a real number: '…'"
    >>> reason_group("stream '9' ended with 1 events, fewer than n_clusters=2")
    "stream '…' ended with N events, fewer than n_clusters=N"
    >>> reason_group("Expecting ',' delimiter: line 1 column 31 (char 30)")
    "Expecting ',' delimiter: line N column N (char N)"
    >>> reason_group("stream 's1' has 2 features ['x', 'y']; event has 1 ['x']")
    "stream '…' has N features ['x', 'y']; event has N ['x']"
    """
    def value(m: re.Match[str]) -> str:
        return m.group(0) if reason[:m.start()].endswith(_NAMES_AFTER) else "'…'"

    return _NUMBER.sub("N", _NOT_WORD_QUOTED.sub(value, reason))


def _reason_groups(dead: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The dead letters' reasons grouped by :func:`reason_group`, the largest group first: each
    with its count, stages and the first reason as an example."""
    groups: dict[str, dict[str, Any]] = {}
    for d in dead:
        reason = str(d.get("reason", ""))
        g = groups.setdefault(reason_group(reason), {"count": 0, "stages": set(),
                                                     "example": reason})
        g["count"] += 1
        g["stages"].add(str(d.get("stage")))
    return [{"reason": r, "count": g["count"], "stage": ", ".join(sorted(g["stages"])),
             "example": g["example"]}
            for r, g in sorted(groups.items(), key=lambda kv: (-kv[1]["count"], kv[0]))]


def _reheats(hist: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reheats in a stream's snapshots (sorted by step): each snapshot whose temperature is
    above the one before. ClusterPerKey's only reheat is a drift restart (after a drift alarm,
    a model initialised afresh, hot, replaced the stream's), so each is one; its centres are
    where the model jumped to.

    Examples
    --------
    >>> snaps = [{"n_steps": s, "n_seen": 100 * s, "temperature": t, "centers": [[s]]}
    ...          for s, t in [(2, 0.9), (3, 0.8), (6, 1.4), (7, 1.2)]]
    >>> [(r["n_seen"], r["temperature_before"], r["temperature_after"]) for r in _reheats(snaps)]
    [(600, 0.8, 1.4)]
    """
    return [{"n_seen": cur["n_seen"], "n_steps": cur["n_steps"],
             "temperature_before": prev["temperature"], "temperature_after": cur["temperature"],
             "centers": cur["centers"]}
            for prev, cur in zip(hist, hist[1:]) if cur["temperature"] > prev["temperature"]]


def model_file_name(key: str) -> str:
    """The file name of a stream's model in ``models/``: a slug of the key (letters, digits,
    ``.``, ``_`` and ``-``, at most 40 characters; never a path, never hidden) and a hash of the
    whole key, so that keys differing anywhere (in case, in characters the slug drops) get
    different files.

    Parameters
    ----------
    key
        The stream's key (any text).

    Returns
    -------
    str
        ``SLUG-HASH.safetensors``.

    Examples
    --------
    >>> model_file_name("stream-0")
    'stream-0-2232b94926.safetensors'
    >>> model_file_name("../../etc/passwd")
    'etc-passwd-3754d6cb3a.safetensors'
    """
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", key).strip(".-")[:40].strip(".-") or "stream"
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{slug}-{digest}.safetensors"


def _names_for(d: int, name_sets: Sequence[Sequence[str]]) -> list[str] | None:
    """The feature names of a model of ``d`` features: the one list of ``d`` names among those
    the events had (None when there are none or several).

    Examples
    --------
    >>> _names_for(2, [["x", "y"], ["x"]]), _names_for(2, [["x", "y"], ["u", "v"]])
    (['x', 'y'], None)
    """
    found = [list(n) for n in name_sets if len(n) == d]
    return found[0] if len(found) == 1 else None


def _snapshot_names(snapshot: dict[str, Any],
                    name_sets: Sequence[Sequence[str]]) -> list[str] | None:
    """A stream's feature names: its snapshot's, or (a snapshot of an earlier release, which
    did not record them) the one list of as many names as it has features among ``name_sets``.

    Examples
    --------
    >>> _snapshot_names({"centers": [[0.0, 1.0]], "seed": 3, "feature_names": None}, [["x", "y"]])
    >>> _snapshot_names({"centers": [[0.0, 1.0]]}, [["x", "y"]])
    ['x', 'y']
    """
    if "feature_names" in snapshot:  # recorded (None: the stream's events had no names)
        names = snapshot.get("feature_names")
        return None if names is None else list(names)
    return _names_for(len(snapshot["centers"][0]), name_sets)


def _write_models(out: Path, history: dict[str, list[dict[str, Any]]],
                  parameters: dict[str, Any], name_sets: Sequence[Sequence[str]]
                  ) -> dict[str, str]:
    """Each stream's last snapshot as a model file (the core's safe format, what
    ``RBFKMeans.load`` and ``streamrbf inspect`` read) in ``out/models``, and an index
    (``models/index.json``: key -> file name). Returns the index.

    A snapshot holds the stream's whole model record (centres, masses, temperatures, counters,
    seed and feature names), so each file is the model ClusterPerKey held at the end. Snapshots
    of earlier releases lacked the starting and floor temperatures, the seed and the names: for
    them the start is the hottest temperature since the stream's last reheat, the floor the
    policy's rule for it (1/1000 of the start), the seed recomputed from the run's and the key,
    and the names the one list of the right length the events had."""
    from ..beam.state import stable_hash
    from ..core.persistence import save_state
    from ..core.policy import AUTO_MIN_RATIO
    from ..core.state import ModelState

    models = out / "models"
    models.mkdir(exist_ok=True)
    index: dict[str, str] = {}
    seed = int(parameters.get("seed", 0))
    for key, hist in sorted(history.items()):
        last = hist[-1]
        C = np.asarray(last["centers"], dtype=np.float64)
        names = _snapshot_names(last, name_sets)
        if last.get("initial_temperature") is not None:
            start, floor = last["initial_temperature"], last["min_temperature"]
        else:  # an earlier release's snapshots: estimated
            rises = [i for i in range(1, len(hist))
                     if hist[i]["temperature"] > hist[i - 1]["temperature"]]
            start = max(s["temperature"] for s in hist[(rises or [0])[-1]:])
            floor = min(AUTO_MIN_RATIO * start, last["temperature"])
        model_seed = last.get("seed")
        if model_seed is None:
            model_seed = (seed * 1_000_003 + stable_hash(key)) % 2**32
        state = ModelState.single(
            C, np.asarray(last["counts"], dtype=np.float64), temperature=last["temperature"],
            initial_temperature=start, min_temperature=floor,
            n_steps=last["n_steps"], n_seen=last["n_seen"], seed=int(model_seed),
            feature_names=None if names is None else tuple(names))
        params = {"n_clusters": int(C.shape[0]), "batch_size": parameters.get("batch_size", 100),
                  "temperature_decay": parameters.get("temperature_decay", "auto"),
                  "half_life": parameters.get("half_life", "auto"), "random_state": seed}
        name = model_file_name(key)
        save_state(models / name, "RBFKMeans", state, params,
                   {"n_iter": None, "inertia": None, "stream": key, "written_by": "streamrbf run"})
        index[key] = name
    (models / "index.json").write_text(json.dumps(index, indent=2))
    return index



def summarise(output_dir: str | Path, ignored_fields: dict[str, int] | None = None, *,
              parameters: dict[str, Any] | None = None,
              counters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read the run's files back and write the rest of the outputs: summary.json, summary.md,
    clusters.png and each stream's model file (``models/``, see :func:`model_file_name`).

    Parameters
    ----------
    output_dir
        The run's ``--output_dir``, holding its assignments, dead letters, snapshots and sample.
    ignored_fields
        The fields that were not features, each with the number of events in which it was
        ignored.
    parameters
        The run's parameters (shown in the summary; the model files take ``n_clusters``,
        ``batch_size``, ``temperature_decay``, ``half_life`` and ``seed`` from them).
    counters
        What the pipeline counted: ``feature_names`` (each list of feature names the events
        had: a model of ``d`` features takes the one list of ``d`` names, if there is one),
        ``drift_alarms`` and ``drift_restarts`` (None where the runner reports no metrics).

    Returns
    -------
    dict
        The summary (summary.json's content) and ``table``, the streams as a Markdown table.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> _ = (out / "dead_letters.jsonl").write_text(
    ...     '{"key": null, "event": "{", "reason": "bad JSON: line 1", "stage": "parse"}\\n')
    >>> s = summarise(out, parameters={"n_clusters": 3})
    >>> s["total_dead_letters"], s["dead_letter_reasons"][0]["reason"]
    (1, 'bad JSON: line N')
    """
    out = Path(output_dir)
    parameters, counters = dict(parameters or {}), dict(counters or {})
    assignments = _read_jsonl(out / "assignments.jsonl")
    dead = _read_jsonl(out / "dead_letters.jsonl")
    history: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in _read_jsonl(out / "snapshots.jsonl"):
        history[s["key"]].append(s)
    for hist in history.values():
        hist.sort(key=lambda s: s["n_steps"])
    per: dict[str, dict[str, Any]] = defaultdict(lambda: {"events": 0, "dead_letters": 0})
    sizes: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for a in assignments:
        per[a["key"]]["events"] += 1
        sizes[a["key"]][a["cluster"]] += 1
    for d in dead:
        per[d["key"] or "(no key)"]["dead_letters"] += 1
    name_sets = counters.get("feature_names") or []
    models = _write_models(out, history, parameters, name_sets) if history else {}
    for key, hist in history.items():
        last = hist[-1]
        per[key].update(
            steps=last["n_steps"], n_seen=last["n_seen"], temperature=last["temperature"],
            centers=last["centers"], masses=last["counts"],
            feature_names=_snapshot_names(last, name_sets),
            cluster_sizes=[sizes[key].get(c, 0) for c in range(len(last["centers"]))],
            reheats=[{k: v for k, v in r.items() if k != "centers"} for r in _reheats(hist)],
            model_file=f"models/{models[key]}")
    total = len(assignments) + len(dead)
    summary = {
        "parameters": parameters, "streams": dict(sorted(per.items())),
        "total_events": len(assignments), "total_dead_letters": len(dead),
        "dead_letter_share": round(len(dead) / total, 6) if total else 0.0,
        "dead_letter_reasons": _reason_groups(dead),
        "drift_alarms": counters.get("drift_alarms"),
        "drift_restarts": counters.get("drift_restarts"),
        "ignored_fields": dict(sorted((ignored_fields or {}).items())),
        "models": "models/" if models else None}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    table = _streams_table(summary["streams"])
    (out / "summary.md").write_text(_summary_markdown(summary, table))
    _plot(history, _read_jsonl(out / "sample.jsonl"), name_sets, out / "clusters.png")
    summary["table"] = table
    return summary


def _md(value: Any, limit: int = 120) -> str:
    """Text from the data (a key, a reason, a value) safe in a Markdown table cell: on one
    line, control characters escaped, ``\\``, ``|``, backquotes, ``*`` and ``<`` escaped, at most
    ``limit`` characters.

    Examples
    --------
    >>> _md("a|b\\nc <script>")
    'a\\\\|b c \\\\<script>'
    """
    text = " ".join(str(value).split())
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    for ch in "\\|`<*":
        text = text.replace(ch, "\\" + ch)
    return text


def _streams_table(streams: dict[str, dict[str, Any]]) -> str:
    lines = ["| stream | events | dead letters | steps | temperature | reheats | cluster sizes |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for key, row in streams.items():
        t = row.get("temperature")
        reheats = len(row["reheats"]) if "reheats" in row else "-"
        lines.append(f"| {_md(key)} | {row['events']} | {row['dead_letters']} | "
                     f"{row.get('steps', '-')} | {'-' if t is None else f'{t:.3g}'} | "
                     f"{reheats} | {row.get('cluster_sizes', '-')} |")
    return "\n".join(lines)


def _parameter_rows(parameters: dict[str, Any]) -> list[str]:
    rows = ["| parameter | value |", "| --- | --- |"]
    for name, value in parameters.items():
        shown = "-" if value is None else (", ".join(map(str, value))
                                           if isinstance(value, (list, tuple)) else value)
        rows.append(f"| {_md(name)} | {_md(shown)} |")
    return rows


def _centre_tables(streams: dict[str, dict[str, Any]]) -> list[str]:
    """Each stream's centres (the busiest :data:`_MAX_CENTRE_TABLES` streams, at most 8
    features each) as Markdown tables."""
    modelled = [k for k, row in streams.items() if "centers" in row]
    shown = sorted(modelled, key=lambda k: -streams[k]["events"])[:_MAX_CENTRE_TABLES]
    lines: list[str] = []
    if len(shown) < len(modelled):
        lines += [f"The {len(shown)} streams with the most events, of {len(modelled)}; "
                  "summary.json has them all.", ""]
    for key in sorted(shown):
        row = streams[key]
        C = np.asarray(row["centers"])
        d = C.shape[1]
        cols = (row["feature_names"] or [f"feature {j}" for j in range(d)])[:8]
        lines += [f"### {_md(key)}", "",
                  f"{row['events']} events clustered, {row['steps']} steps, temperature "
                  f"{row['temperature']:.3g}, {_plural(len(row['reheats']), 'reheat')}; "
                  "model file "
                  f"`{row['model_file']}`" + (f"; the first 8 of {d} features" if d > 8 else "")
                  + ".", "",
                  "| cluster | events | mass | " + " | ".join(map(_md, cols)) + " |",
                  "| ---: | ---: | ---: | " + " | ".join("---:" for _ in cols) + " |"]
        for c, centre in enumerate(C):
            lines.append(f"| {c} | {row['cluster_sizes'][c]} | {row['masses'][c]:.4g} | "
                         + " | ".join(f"{v:.4g}" for v in centre[:8]) + " |")
        lines.append("")
    return lines


def _plural(n: int, what: str) -> str:
    return f"{n} {what}{'s' * (n != 1)}"


def _drift_lines(summary: dict[str, Any]) -> list[str]:
    alarms, restarts = summary["drift_alarms"], summary["drift_restarts"]
    counted = ("The runner reports no metrics: drift alarms and restarts were not counted."
               if alarms is None else
               f"ClusterPerKey's drift detector raised {_plural(alarms, 'alarm')}; "
               f"{restarts} of them restarted a stream's model.")
    lines = [counted + " A restart replaces the stream's model by one initialised afresh on its "
             "latest events if that halves their K-Means cost; the new model starts hot, so "
             "the stream's temperature rises (a reheat). Below, each rise of a stream's "
             "temperature between two of its snapshots (an alarm without a restart leaves "
             "none).", ""]
    rows = [(key, r) for key, row in summary["streams"].items() for r in row.get("reheats", ())]
    if not rows:
        return [*lines, "No stream was reheated.", ""]
    lines += ["| stream | at event | step | temperature before | after |",
              "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {_md(key)} | {r['n_seen']} | {r['n_steps']} | "
              f"{r['temperature_before']:.3g} | {r['temperature_after']:.3g} |"
              for key, r in rows]
    return [*lines, ""]


def _summary_markdown(summary: dict[str, Any], table: str) -> str:
    """summary.md: the run as a report."""
    from .run_flags import OUTPUTS

    n, n_dead = summary["total_events"], summary["total_dead_letters"]
    share = summary["dead_letter_share"]
    modelled = sum("centers" in row for row in summary["streams"].values())
    lines = ["# streamrbf run", "",
             f"{n + n_dead} events: {n} clustered, {n_dead} dead letters ({share:.1%}); "
             f"{modelled} streams with a model.", "", "## Parameters", "",
             *_parameter_rows(summary["parameters"]), "", "## Streams", "", table, ""]
    ignored = _ignored_line(summary["ignored_fields"])
    if ignored:
        lines += [ignored[0].upper() + ignored[1:] + ".", ""]
    lines += ["## Dead letters by reason", ""]
    if summary["dead_letter_reasons"]:
        lines += ["Reasons with their values as '…' and numbers as N; an example of each.", "",
                  "| dead letters | stage | reason | example |", "| ---: | --- | --- | --- |"]
        lines += [f"| {g['count']} | {g['stage']} | {_md(g['reason'])} | {_md(g['example'])} |"
                  for g in summary["dead_letter_reasons"]]
        lines.append("")
    else:
        lines += ["None.", ""]
    lines += ["## Drift and reheats", "", *_drift_lines(summary),
              "## Centres", "", *_centre_tables(summary["streams"]),
              "## Files", ""]
    lines += [f"- `{name}`: {text}" for name, text in OUTPUTS]
    return "\n".join(lines) + "\n"


def _limits(values: list[np.ndarray]) -> tuple[float, float] | None:
    """The range of some arrays' values, with a 5% margin (None for no values)."""
    finite = [v[np.isfinite(v)] for v in values if np.size(v)]
    finite = [v for v in finite if v.size]
    if not finite:
        return None
    lo, hi = min(float(v.min()) for v in finite), max(float(v.max()) for v in finite)
    pad = 0.05 * (hi - lo) or 0.5
    return lo - pad, hi + pad


def _shared(ranges: list[tuple[float, float] | None]) -> tuple[float, float] | None:
    """One range for all panels when theirs are alike (the union at most 3 times the widest);
    None: each panel keeps its own."""
    known = [r for r in ranges if r is not None]
    if not known:
        return None
    lo, hi = min(r[0] for r in known), max(r[1] for r in known)
    return (lo, hi) if hi - lo <= 3 * max(r[1] - r[0] for r in known) else None


def _plot(history: dict[str, list[dict[str, Any]]], sample: Sequence[dict[str, Any]],
          name_sets: Sequence[Sequence[str]], path: Path) -> None:
    """clusters.png: per stream (the :data:`_MAX_PANELS` with the most events), its sampled
    events coloured by cluster, its centres' paths, their final places and the drift restarts
    (reheats); below, every drawn stream's temperature against the events it has seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    keys = sorted(sorted(history, key=lambda k: -history[k][-1]["n_seen"])[:_MAX_PANELS])
    points: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in sample:
        points[row["key"]].append(row)
    ncols = len(keys) if len(keys) <= 2 else (2 if len(keys) <= 4 else 4)
    nrows = -(-len(keys) // ncols)
    fig = plt.figure(figsize=(5.2 * ncols + 0.4, 4.3 * nrows + 3.6), layout="constrained")
    grid = fig.add_gridspec(nrows + 1, ncols, height_ratios=[4.3] * nrows + [3.0])
    d = max(len(history[k][-1]["centers"][0]) for k in keys)
    label = _names_for(d, name_sets) or [f"feature {j}" for j in range(d)]
    k_max = max(len(history[k][-1]["centers"]) for k in keys)
    cmap = plt.get_cmap("tab10" if k_max <= 10 else "tab20")
    panels = []
    for i, key in enumerate(keys):
        ax = fig.add_subplot(grid[i // ncols, i % ncols])
        panels.append(ax)
        _draw_stream(ax, key, history[key], points.get(key, []), cmap, label)
    xs = _shared([ax.get_xlim() for ax in panels])
    ys = _shared([ax.get_ylim() for ax in panels])
    for ax in panels:
        if xs is not None and ys is not None:
            ax.set_xlim(xs)
            ax.set_ylim(ys)
    scales = ("all panels on the same scales" if xs is not None and ys is not None
              else "each panel on its own scales")
    _draw_temperatures(fig.add_subplot(grid[nrows, :]), keys, history)
    handles = [plt.Line2D([], [], ls="", marker="o", color=cmap(c % cmap.N), markersize=7,
                          label=f"cluster {c}") for c in range(k_max)]
    handles += [
        plt.Line2D([], [], ls="", marker="o", color="0.45", alpha=0.5, markersize=4,
                   label="sampled event"),
        plt.Line2D([], [], color="0.3", lw=1.6, label="centre path"),
        plt.Line2D([], [], ls="", marker="o", color="0.3", mec="black", mew=1.2,
                   markersize=9, label="final centre"),
        plt.Line2D([], [], ls="", marker="X", color="black", markersize=9,
                   label="drift restart (reheat)")]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8),
               fontsize=10, frameon=False)
    shown = (f"{len(keys)} streams" if len(keys) == len(history)
             else f"the {len(keys)} streams with the most events, of {len(history)}")
    fig.suptitle(f"streamrbf run: {shown}; {scales}", fontsize=13)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _draw_stream(ax: Any, key: str, hist: Sequence[dict[str, Any]],
                 points: Sequence[dict[str, Any]], cmap: Any, label: Sequence[str]) -> None:
    """One stream's panel of clusters.png: features 0 and 1 (one feature: it against the
    events seen)."""
    C = np.asarray([s["centers"] for s in hist], dtype=np.float64)  # (snapshots, k, d)
    seen = np.asarray([s["n_seen"] for s in hist], dtype=np.float64)
    one = C.shape[2] == 1
    if points and not one:
        X = np.asarray([p["features"][:2] for p in points], dtype=np.float64)
        colours = [cmap(p["cluster"] % cmap.N) for p in points]
        ax.scatter(X[:, 0], X[:, 1], s=9, c=colours, alpha=0.45, linewidths=0, zorder=1)
    reheat_at = [i for i in range(1, len(hist))
                 if hist[i]["temperature"] > hist[i - 1]["temperature"]]
    for c in range(C.shape[1]):
        colour = cmap(c % cmap.N)
        x, y = (seen, C[:, c, 0]) if one else (C[:, c, 0], C[:, c, 1])
        ax.plot(x, y, "-", color=colour, lw=1.6, zorder=2)
        ax.plot(x[-1], y[-1], "o", color=colour, mec="black", mew=1.2, ms=9, zorder=4)
        ax.plot(x[reheat_at], y[reheat_at], "X", color="black", ms=9, zorder=5)
    n_reheats = len(reheat_at)
    last = hist[-1]
    ax.set_title(f"{_short_label(key)}: {last['n_seen']:,} events, T {last['temperature']:.2g}"
                 + (f", {n_reheats} reheat{'s' * (n_reheats != 1)}" if n_reheats else ""),
                 fontsize=11)
    ax.set_xlabel("events seen" if one else label[0])
    ax.set_ylabel(label[0] if one else label[1] + ("" if C.shape[2] == 2
                                                    else f" (2 of {C.shape[2]} features)"))
    ax.grid(alpha=0.25)


def _short_label(key: str, limit: int = 32) -> str:
    """A key as a plot's text: printable, at most ``limit`` characters, no mathtext ($)."""
    text = "".join(ch if ch.isprintable() else "?" for ch in key).replace("$", r"\$")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _draw_temperatures(ax: Any, keys: Sequence[str],
                       history: dict[str, list[dict[str, Any]]]) -> None:
    """The bottom panel of clusters.png: each stream's temperature (log scale) against the
    events it has seen, reheats marked."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    # Not the clusters' colours (tab10): a dark sequential palette, a line style per stream.
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.7, len(keys)))
    for i, key in enumerate(keys):
        hist = history[key]
        seen = np.asarray([s["n_seen"] for s in hist])
        t = np.asarray([s["temperature"] for s in hist])
        ax.semilogy(seen, t, ("-", "--", "-.", ":")[i % 4], color=colours[i], lw=1.8,
                    label=_short_label(key))
        up = [i for i in range(1, len(t)) if t[i] > t[i - 1]]
        ax.plot(seen[up], t[up], "X", color="black", ms=9, zorder=5)
    ax.set_xlabel("events seen by the stream")
    ax.set_ylabel("temperature (log scale)")
    ax.set_title("Temperature: annealing, and a reheat at each drift restart", fontsize=11)
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.2g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=8)
    ax.margins(y=0.08)
    ax.grid(alpha=0.25, which="both")
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.0, 0.5), title="stream",
              frameon=False)


def _ignored_line(ignored: dict[str, int]) -> str:
    """One line naming the ignored fields and how often ("" for none).

    Examples
    --------
    >>> _ignored_line({"id": 2000, "note": 3})
    'ignored fields (not features): id (2000 events), note (3 events)'
    """
    if not ignored:
        return ""
    return "ignored fields (not features): " + ", ".join(
        f"{name} ({n} event{'s' * (n != 1)})" for name, n in ignored.items())


def _counters(result: Any, namespace: str) -> dict[str, int] | None:
    """The counters of a finished pipeline in ``namespace``, by name (None where the runner
    reports no metrics)."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        found = result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]
    except Exception:  # noqa: BLE001 - a runner without metrics: no counts
        return None
    counts: dict[str, int] = defaultdict(int)
    for c in found:
        n = c.committed if c.committed is not None else c.attempted
        counts[c.key.metric.name] += int(n or 0)
    return dict(counts)


def _run_counters(result: Any) -> tuple[dict[str, int], dict[str, Any]]:
    """The ignored fields' counts, and what :func:`summarise` takes as ``counters``: the
    events' feature names (when every event had the same), the drift alarms and restarts."""
    ignored = {k: v for k, v in (_counters(result, _IGNORED) or {}).items() if v}
    names = [json.loads(k) for k, v in (_counters(result, _FEATURE_NAMES) or {}).items() if v]
    drift = _counters(result, _DRIFT[0])
    counters: dict[str, Any] = {"feature_names": [n for n in names if n is not None]}
    for name in _DRIFT[1]:
        counters[name] = None if drift is None else drift.get(name, 0)
    return ignored, counters


def _parameters(args: argparse.Namespace, options: PipelineOptions) -> dict[str, Any]:
    """The run's parameters as the summary shows them."""
    if getattr(args, "dead_letters", None):
        source = f"replay of {args.dead_letters}"
    elif args.input_subscription or args.input_topic:
        source = f"Pub/Sub {args.input_subscription or args.input_topic}"
    elif args.input:
        source = args.input
    else:
        source = (f"built-in generator: {args.streams} streams x {args.events_per_stream} "
                  f"events, {args.bad_fraction:.1%} broken")
    return {"input": source, "runner": _runner_name(options), "key_field": args.key_field,
            "features": _names(args.features) or "each event's numeric fields",
            "id_field": args.id_field, "keep_fields": _names(args.keep_fields),
            "n_clusters": args.n_clusters, "batch_size": args.batch_size,
            "temperature_decay": args.temperature_decay, "half_life": args.half_life,
            "seed": args.seed, "max_dead_letter_share": args.max_dead_letter_share}


_LOCAL_RUNNERS = frozenset(
    {"FnApiRunner", "DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner"})


def _runner_name(options: PipelineOptions) -> str:
    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) else type(runner).__name__
    return str(name).rsplit(".", 1)[-1]


def _in_process(options: PipelineOptions) -> bool:
    """Whether the DoFns run in this process (Beam's local runners, not multi-processing)."""
    from apache_beam.options.pipeline_options import DirectOptions

    return (_runner_name(options) in _LOCAL_RUNNERS
            and options.view_as(DirectOptions).direct_running_mode != "multi_processing")


def _beam_parser() -> argparse.ArgumentParser | None:
    """An argument parser that knows every Beam pipeline option imported so far (as
    ``PipelineOptions.get_all_options`` builds it); None for a Beam without one."""
    from apache_beam.options import pipeline_options as po

    parser_class = getattr(po, "_BeamArgumentParser", None)
    if parser_class is None:
        return None
    parser = parser_class(allow_abbrev=False)
    classes: dict[str, type] = {}
    for cls in po.PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)
    return parser


def unknown_beam_flags(beam_args: Sequence[str],
                       beam_parser: argparse.ArgumentParser | None = None) -> list[str]:
    """The arguments in ``beam_args`` that no Beam pipeline option knows (typos, stray words).

    Parameters
    ----------
    beam_args
        The arguments the job's own parser left over.
    beam_parser
        A parser of every Beam pipeline option; None builds one.

    Returns
    -------
    list of str
        The unknown arguments, in order (values of unknown flags included); empty for a Beam
        that has no such parser.

    Examples
    --------
    >>> unknown_beam_flags(["--runner=DirectRunner", "--streaming", "--ouptut_dir", "x"])
    ['--ouptut_dir', 'x']
    """
    beam_parser = beam_parser or _beam_parser()
    if beam_parser is None:  # a Beam without it: let Beam warn about what it drops
        return []
    _, unknown = beam_parser.parse_known_args(list(beam_args))
    return list(unknown)


def _long_flags(parser: argparse.ArgumentParser | None) -> list[str]:
    if parser is None:
        return []
    return [o for a in parser._actions for o in a.option_strings if o.startswith("--")]


def _near_misses(unknown: Sequence[str], parser: argparse.ArgumentParser,
                 beam_parser: argparse.ArgumentParser | None = None) -> dict[str, str]:
    """Unknown flags that are one or two letters away from a flag of the job or of Beam (typos,
    refused as usage errors), each with the flag it probably meant.

    Examples
    --------
    >>> _near_misses(["--ouptut_dir", "x", "--checkpointing_interval=60000"], run_parser())
    {'--ouptut_dir': '--output_dir'}
    """
    known = _long_flags(parser) + _long_flags(beam_parser or _beam_parser())
    misses = {}
    for arg in unknown:
        if arg.startswith("--"):
            flag = arg.split("=", 1)[0]
            match = difflib.get_close_matches(flag, known, n=1, cutoff=0.85)
            if match and match[0] != flag:
                misses[flag] = match[0]
    return misses


def beam_options(beam_args: Sequence[str], parser: argparse.ArgumentParser) -> PipelineOptions:
    """Beam's options from the job's left-over flags, the runner pinned to the in-process
    FnApiRunner unless one is given. A near miss of a known flag is a usage error; so is any
    flag no Beam Python option declares on a local runner (which would silently ignore it). On
    other runners such flags (Flink's ``--checkpointing_interval``, say) go to the job server as
    they are, with a note on stderr.

    Examples
    --------
    >>> _runner_name(beam_options([], run_parser()))
    'FnApiRunner'
    >>> flink = ["--runner=FlinkRunner", "--checkpointing_interval=60000"]
    >>> _runner_name(beam_options(flink, run_parser()))   # (and a note on stderr)
    'FlinkRunner'
    """
    beam_parser = _beam_parser()
    unknown = unknown_beam_flags(beam_args, beam_parser)
    typos = _near_misses(unknown, parser, beam_parser)
    if typos:
        parser.error("unrecognized arguments: " + ", ".join(
            f"{flag} (did you mean {match}?)" for flag, match in typos.items()))
    if not any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        beam_args = ["--runner=FnApiRunner", *beam_args]
    options = PipelineOptions(list(beam_args))
    if unknown and _runner_name(options) in _LOCAL_RUNNERS:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (Beam's local runners read "
                     "no such option)")
    if unknown:
        # a typo would land here too: say what is passed on
        print(f"streamrbf run: passing flags no Beam Python option declares to the runner: "
              f"{' '.join(unknown)}", file=sys.stderr)
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job with the flags of ``streamrbf run``; Beam flags pass through. Returns 0;
    raises on failure (:func:`streamrbf.console.run_command` turns that into an exit code and one
    line), also when the dead letters' share of the events exceeds ``--max_dead_letter_share``
    (a ``CommandError`` with exit code
    :data:`~streamrbf.console.EXIT_TOO_MANY_DEAD_LETTERS`, after the outputs are written).

    The output directory's earlier assignments, dead letters and snapshots are deleted first;
    after the run, :func:`summarise` writes the summary files and, unless ``--quiet``, the
    summary table and the throughput are printed.

    Parameters
    ----------
    argv
        The flags (None: ``sys.argv[1:]``): those of :func:`~streamrbf.jobs.run_flags.run_parser`,
        then any Beam pipeline option.

    Returns
    -------
    int
        0.

    Examples
    --------
    >>> main(["--streams", "2", "--events_per_stream", "100", "--quiet",
    ...       "--output_dir", "/tmp/out"])  # doctest: +SKIP
    0
    """
    parser = run_parser(prog="streamrbf run")
    args, beam_args = parser.parse_known_args(argv)
    return _run_job(parser, args, beam_args)


def _run_job(parser: argparse.ArgumentParser, args: argparse.Namespace,
             beam_args: Sequence[str]) -> int:
    check_run_flags(parser, args)
    options = beam_options(beam_args, parser)
    streaming = bool(options.view_as(StandardOptions).streaming
                     or args.input_subscription or args.input_topic)
    if streaming:
        options.view_as(StandardOptions).streaming = True
    files = _input_files(args.input) if args.input else []  # no match: stop, write nothing
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _remove_earlier_outputs(out)
    show = progress_enabled(disabled=args.quiet or not args.progress) and _in_process(options)
    run_id = uuid.uuid4().hex if show else ""
    bar = None
    if show:
        total: int | None = None
        if files:
            total = _count_lines(files, skip_header=args.input.lower().endswith(".csv"))
        elif not streaming:
            total = args.streams * args.events_per_stream
        board = _BOARDS[run_id] = _Board()
        bar = _ProgressBar(board, total)
    start = time.perf_counter()
    try:
        p = beam.Pipeline(options=options)
        build_pipeline(p, args, streaming, run_id)
        result = p.run()
        result.wait_until_finish()
    finally:
        elapsed = time.perf_counter() - start
        if bar is not None:
            bar.close()
        _BOARDS.pop(run_id, None)
    ignored, counters = _run_counters(result)
    summary = summarise(out, ignored, parameters=_parameters(args, options), counters=counters)
    n, n_dead = summary["total_events"], summary["total_dead_letters"]
    if not args.quiet:
        print(summary["table"])
        ignored_line = _ignored_line(summary["ignored_fields"])
        if ignored_line:
            print(f"\n{ignored_line}")
        print(f"\n{n} events clustered, {n_dead} dead letters in "
              f"{elapsed:.1f} s ({n / max(elapsed, 1e-9):,.0f} events/s); outputs in "
              f"{out.resolve()}")
        n_models = sum("model_file" in row for row in summary["streams"].values())
        if n_models:
            print(f"models: {_plural(n_models, 'file')} in {(out / 'models').resolve()} (one "
                  "per stream, listed in index.json); 'streamrbf inspect FILE' opens one")
    share = summary["dead_letter_share"]
    if share > args.max_dead_letter_share:
        raise CommandError(
            f"too many dead letters: {n_dead} of {n + n_dead} events ({share:.0%}), more than "
            f"--max_dead_letter_share {args.max_dead_letter_share:g}; see "
            f"{out / 'dead_letters.jsonl'}", exit_code=EXIT_TOO_MANY_DEAD_LETTERS)
    return 0


def _remove_earlier_outputs(out: Path) -> None:
    """Delete what an earlier run left in ``out`` that this run may not overwrite: the
    (possibly sharded) JSON-lines files and the model files."""
    for old in ("assignments.jsonl", "dead_letters.jsonl", "snapshots.jsonl", "sample.jsonl"):
        for f in out.glob(old + "*"):
            f.unlink()
    (out / "clusters.png").unlink(missing_ok=True)  # (a run without a model draws none)
    models = out / "models"
    if models.is_dir():
        for f in [*models.glob("*.safetensors"), models / "index.json"]:
            f.unlink(missing_ok=True)


def _dead_letter_events(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The dead letters in ``paths`` (JSON lines with an ``event`` text); a ``CommandError``
    naming the first line that is not one."""
    letters = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                except ValueError as err:
                    raise CommandError(f"{path}:{i} is not a dead letter (JSON): {err}") from None
                if not isinstance(d, dict) or not isinstance(d.get("event"), str):
                    raise CommandError(f"{path}:{i} is not a dead letter: no 'event' text")
                letters.append(d)
    return letters


def replay(argv: Sequence[str] | None = None) -> int:
    """``streamrbf replay DEAD_LETTERS [run flags]``: run the job again on the ``event`` of each
    dead letter (the input line, verbatim; fix it in the file first).

    Dead letters of CSV input (they have a ``csv_header``) are written back as CSV files, one
    per header, each with its header line; the others as JSON lines. The models start afresh:
    a stream needs ``--n_clusters`` events to be clustered. ``--output_dir`` defaults to
    ``./streamrbf-replay`` (not the first run's folder, whose dead letters are being replayed).

    Parameters
    ----------
    argv
        The dead-letters file (or a glob of them), then the flags of ``streamrbf run`` but its
        input flags.

    Returns
    -------
    int
        0 (raises on failure, as :func:`main`: a ``CommandError`` with exit code 4 when too
        many of the replayed events are dead letters again).

    Examples
    --------
    >>> replay(["--help"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    SystemExit: 0
    """
    parser = run_parser(prog="streamrbf replay", replay=True)
    args, beam_args = parser.parse_known_args(argv)
    import glob

    paths = sorted(Path(p) for p in glob.glob(args.dead_letters)) or [Path(args.dead_letters)]
    letters = _dead_letter_events(paths)  # (a missing file: OSError, exit code 1)
    with tempfile.TemporaryDirectory(prefix="streamrbf-replay-") as tmp:
        if any(d.get("csv_header") is not None for d in letters):
            by_header: dict[str, list[str]] = defaultdict(list)
            for d in letters:
                by_header[d.get("csv_header") or ""].append(d["event"])
            for i, (header, events) in enumerate(by_header.items()):
                Path(tmp, f"replay-{i}.csv").write_bytes(
                    "\n".join([header, *events, ""]).encode("utf-8", "backslashreplace"))
            args.input = str(Path(tmp, "replay-*.csv"))
        else:
            Path(tmp, "replay.jsonl").write_bytes("".join(
                d["event"] + "\n" for d in letters).encode("utf-8", "backslashreplace"))
            args.input = str(Path(tmp, "replay.jsonl"))
        return _run_job(parser, args, beam_args)


if __name__ == "__main__":
    raise SystemExit(run_command("streamrbf run", main, sys.argv[1:]))
