"""The Beam state coders on bytes they did not write: ``KeyStateCoder`` and ``ModelStateCoder``
turn every malformed or inconsistent encoding into a ``ValueError`` saying why, and decode what
they wrote exactly (hypothesis: round trips, random bytes and mutants of valid encodings)."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamrbf.beam.state import KeyState, KeyStateCoder, ModelState, ModelStateCoder

pytestmark = pytest.mark.timeout(600)

KC, MC = KeyStateCoder(), ModelStateCoder()
HEAD = struct.Struct("<4sBdIIi")  # magic, flags, flush_at, pending rows, d, len(names) or -1
LEGACY = {b"SRB1": struct.Struct("<4sBIIIdddqq"), b"SRB2": struct.Struct("<4sBIIIdddqqd")}
MODEL, IDS, DETECTOR, RECENT = 1, 2, 4, 8
FAST = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LONG = settings(FAST, max_examples=20_000)


# ------------------------------------------------------------------------------ valid states
def _model(d: int = 2, names: tuple[str, ...] | None = None, k: int = 2) -> ModelState:
    return ModelState.single(np.arange(k * d, dtype=np.float64).reshape(k, d), np.ones(k),
                             temperature=0.5, n_steps=3, n_seen=40, seed=7, feature_names=names)


def _key(flags: int = 0, flush_at: float = math.nan, m: int = 0, d: int = 0,
         names: bytes | None = None, pending: bytes = b"", model: bytes = b"", tail: bytes = b"",
         n_names: int | None = None) -> bytes:
    """A ``SRK1`` encoding written field by field (so any field can be wrong)."""
    if n_names is None:
        n_names = -1 if names is None else len(names)
    return b"".join([HEAD.pack(b"SRK1", flags, flush_at, m, d, n_names), names or b"", pending,
                     struct.pack("<I", len(model)), model, tail])


def _legacy(magic: bytes = b"SRB2", *, wide: int = 1, centers: np.ndarray | None = None,
            counts: np.ndarray | None = None, pending: np.ndarray | None = None,
            t: float = 0.5, t0: float = 1.0, tmin: float = 0.001, steps: int = 4,
            seen: int = 80, flush_at: float = 7.0, names: bytes = b'["a","b"]',
            ids: bytes = b"") -> bytes:
    """A per-key state as releases before ``SRK1`` wrote it."""
    C = np.eye(2) if centers is None else centers
    counts = np.ones(len(C)) if counts is None else counts
    k, d = C.shape
    m = 0 if pending is None else len(pending)
    head = LEGACY[magic].pack(magic, wide, k, d, m, t, t0, tmin, steps, seen,
                              *([flush_at] if magic == b"SRB2" else []))
    rows = b"" if pending is None else pending.tobytes()
    return b"".join([head, struct.pack("<I", len(names)), names,
                     C.astype(np.float64 if wide else np.float32).tobytes(),
                     counts.astype(np.float64).tobytes(), rows, ids])


_finite = st.floats(-1e6, 1e6, allow_nan=False)
_positive = st.floats(1e-6, 1e6)
_ids = st.one_of(st.text(max_size=6), st.integers(-(2**80), 2**80), st.none())


@st.composite
def key_states(draw) -> KeyState:
    """A state ``ClusterPerKey`` could keep: a key warming up (pending rows only) or one with a
    model, feature names or not, ids or not, a drift detector's memory, rows since an alarm."""
    d = draw(st.integers(1, 4))
    names = draw(st.none() | st.lists(st.text(max_size=5), min_size=d, max_size=d).map(tuple))
    model = None
    if draw(st.booleans()):
        k = draw(st.integers(1, 3))
        dtype = draw(st.sampled_from([np.float32, np.float64]))
        C = np.array(draw(st.lists(st.floats(-1e6, 1e6, width=32), min_size=k * d,
                                   max_size=k * d)), dtype).reshape(k, d)
        masses = np.array(draw(st.lists(st.floats(0, 1e6), min_size=k, max_size=k)))
        t0 = draw(_positive)
        model = ModelState.single(
            C, masses, temperature=draw(_positive), initial_temperature=t0,
            min_temperature=draw(st.floats(0, 1e6)), n_steps=draw(st.integers(0, 2**63 - 1)),
            n_seen=draw(st.integers(0, 2**63 - 1)), seed=draw(st.integers(0, 2**64 - 1)),
            feature_names=names if draw(st.booleans()) else None)
    m = draw(st.integers(0, 4))
    pending = ids = None
    if m:
        pending = np.array(draw(st.lists(_finite, min_size=m * d, max_size=m * d))).reshape(m, d)
        if draw(st.booleans()):
            ids = draw(st.lists(_ids, min_size=m, max_size=m))
    flush_at = draw(st.none() | _finite)
    detector = recent = None
    if model is not None and draw(st.booleans()):
        detector = np.array(draw(st.lists(st.floats(), max_size=4)))
        if draw(st.booleans()):
            r = draw(st.integers(0, 3))
            recent = np.array(draw(st.lists(_finite, min_size=r * d, max_size=r * d)),
                              np.float64).reshape(r, d)
    return KeyState(model, names, pending, ids, flush_at, detector, recent)


@st.composite
def legacy_states(draw) -> bytes:
    """A per-key state an earlier release wrote (``SRB1`` or ``SRB2``)."""
    d, k, m = draw(st.integers(1, 3)), draw(st.integers(0, 3)), draw(st.integers(0, 3))
    C = np.array(draw(st.lists(st.floats(-1e6, 1e6, width=32), min_size=k * d,
                               max_size=k * d)), np.float64).reshape(k, d)
    pending = (np.array(draw(st.lists(_finite, min_size=m * d, max_size=m * d))).reshape(m, d)
               if m else None)
    names = draw(st.none() | st.lists(st.text(max_size=4), min_size=d, max_size=d))
    ids = draw(st.none() | st.lists(_ids, min_size=m, max_size=m)) if m else None
    return _legacy(draw(st.sampled_from([b"SRB1", b"SRB2"])), wide=draw(st.integers(0, 1)),
                   centers=C, counts=np.array(draw(st.lists(st.floats(0, 1e6), min_size=k,
                                                            max_size=k))),
                   pending=pending, names=b"" if names is None else json.dumps(names).encode(),
                   ids=b"" if ids is None else json.dumps(ids).encode())


def _same_arrays(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None) == (b is None) and (a is None or (
        a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()))


@FAST
@given(key_states())
def test_valid_key_states_round_trip_exactly(s):
    data = KC.encode(s)
    t = KC.decode(data)
    assert KC.encode(t) == data
    assert (t.feature_names, t.pending_ids, t.flush_at) == (s.feature_names, s.pending_ids,
                                                          s.flush_at)
    for name in ("pending", "detector", "recent"):
        assert _same_arrays(getattr(t, name), getattr(s, name)), name
    assert (t.model is None) == (s.model is None)
    if s.model is not None:
        for name in ("centers", "masses", "temperature", "initial_temperature",
                     "min_temperature", "n_steps", "n_seen", "seed"):
            assert _same_arrays(getattr(t.model, name), getattr(s.model, name)), name
        assert t.model.feature_names == s.model.feature_names
    _assert_consistent(t)


@FAST
@given(legacy_states())
def test_valid_legacy_states_decode_and_re_encode(data):
    t = KC.decode(data)
    _assert_consistent(t)
    assert KC.encode(KC.decode(KC.encode(t))) == KC.encode(t)


def test_encoding_layout_is_unchanged():
    # Stored Beam state depends on these bytes: header, names, rows, model, extras, ids.
    model = _model(2, ("x", "y"))
    s = KeyState(model, ("x", "y"), np.ones((2, 2)), ["a", 7], 5.0, np.zeros(3),
                 np.full((1, 2), 2.0))
    mb = MC.encode(model)
    want = b"".join([HEAD.pack(b"SRK1", 15, 5.0, 2, 2, 10), b'["x", "y"]',
                     np.ones(4).tobytes(), struct.pack("<I", len(mb)), mb,
                     struct.pack("<II", 3, 0), np.zeros(3).tobytes(),
                     struct.pack("<II", 1, 2), np.full(2, 2.0).tobytes(), b'["a",7]'])
    assert KC.encode(s) == want
    assert KC.encode(KeyState(None, None)) == HEAD.pack(b"SRK1", 0, math.nan, 0, 0, -1) + bytes(4)


# ------------------------------------------------------------------------- what a decode gives
def _assert_consistent(s: KeyState) -> None:
    """The rules a decoded state must follow (written out here, apart from the decoder's)."""
    m = s.model
    d = None
    if m is not None:
        assert m.centers.shape[:1] == (1,) and m.n_clusters >= 1 and m.n_features >= 1
        assert np.isfinite(m.centers).all() and np.isfinite(m.masses).all()
        assert (m.masses >= 0).all() and (m.temperature > 0).all()
        assert (m.initial_temperature > 0).all() and (m.min_temperature >= 0).all()
        assert (m.n_steps >= 0).all() and (m.n_seen >= 0).all()
        d = m.n_features
    if s.pending is not None:
        assert s.pending.ndim == 2 and s.pending.shape[0] >= 1 and s.pending.shape[1] >= 1
        assert d in (None, s.pending.shape[1]) and np.isfinite(s.pending).all()
        d = s.pending.shape[1]
    if s.pending_ids is not None:
        assert isinstance(s.pending_ids, list) and len(s.pending_ids) == s.n_pending
        assert all(i is None or type(i) in (int, str) for i in s.pending_ids)
    if s.feature_names is not None:
        assert isinstance(s.feature_names, tuple)
        assert all(type(n) is str for n in s.feature_names)
        assert d is None or len(s.feature_names) == d
        if m is not None and m.feature_names is not None:
            assert m.feature_names == s.feature_names
    assert s.flush_at is None or math.isfinite(s.flush_at)
    if s.recent is not None:
        assert s.recent.ndim == 2 and d in (None, s.recent.shape[1])
        assert np.isfinite(s.recent).all()


def _decode_or_refuse(data: bytes) -> None:
    """``KeyStateCoder.decode`` refuses ``data`` with a ValueError, or decodes a consistent
    state that re-encodes (and decodes again to the same bytes)."""
    try:
        s = KC.decode(data)
    except ValueError as err:
        assert str(err).startswith("not an encoded streamrbf key state: "), err
        return
    _assert_consistent(s)
    again = KC.encode(s)
    assert KC.encode(KC.decode(again)) == again


def _decode_model_or_refuse(data: bytes) -> None:
    try:
        s = MC.decode(data)
    except ValueError as err:
        assert str(err).startswith("not an encoded streamrbf model state"), err
        return
    # (Banks of no models, centres or features and other `wide` flags: persistence's tests.)
    assert np.isfinite(s.centers).all() and (s.masses >= 0).all()
    assert (s.temperature > 0).all() and (s.n_steps >= 0).all() and (s.n_seen >= 0).all()
    again = MC.encode(s)
    assert MC.encode(MC.decode(again)) == again


_EXTREME_INTS = [0, 1, 2, 3, 255, 2**31 - 1, 2**31, 2**32 - 1, -1, -2, -(2**31), 2**63 - 1]
_EXTREME_FLOATS = [math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]


@st.composite
def mutants(draw, bases: st.SearchStrategy[bytes]) -> bytes:
    """A valid encoding with a few bytes flipped, overwritten, inserted or deleted, truncated,
    or a field (at a header offset or anywhere) overwritten with an extreme int or float. The
    magic is mostly kept (random bytes test other magics)."""
    b = bytearray(draw(bases))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["truncate", "flip", "byte", "insert", "delete", "int",
                                   "float"]))
        start = 0 if draw(st.integers(0, 19)) == 0 else min(4, max(len(b) - 1, 0))
        at = draw(st.integers(start, max(len(b) - 1, start)))
        if op == "truncate":
            del b[at:]
        elif op == "flip" and b:
            b[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and b:
            b[at] = draw(st.integers(0, 255))
        elif op == "insert":
            b[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del b[at:at + draw(st.integers(1, 16))]
        elif op == "int":
            at = draw(st.sampled_from([4, 5, 13, 17, 21, 25, at]))  # SRK1's header fields
            fmt = draw(st.sampled_from(["<B", "<i", "<I", "<q"]))
            value = draw(st.sampled_from(_EXTREME_INTS) | st.integers(-(2**31), 2**32 - 1))
            raw = struct.pack("<q", value)[: struct.calcsize(fmt)]
            b[at:at + len(raw)] = raw
        elif op == "float":
            raw = struct.pack("<d", draw(st.sampled_from(_EXTREME_FLOATS)))
            b[at:at + 8] = raw
    return bytes(b)


_junk = st.one_of(
    st.binary(max_size=64),
    st.tuples(st.sampled_from([b"SRK1", b"SRB1", b"SRB2", b"SRS1"]),
              st.binary(max_size=96)).map(b"".join),
)
_key_mutants = mutants(st.one_of(key_states().map(KC.encode), legacy_states()))
_model_mutants = mutants(key_states().filter(lambda s: s.model is not None).map(
    lambda s: MC.encode(s.model)))
# Mostly mutants of valid encodings, some random bytes.
_key_bytes = st.one_of(_junk, _key_mutants, _key_mutants, _key_mutants)
_model_bytes = st.one_of(_junk, _model_mutants, _model_mutants, _model_mutants)


@FAST
@given(_key_bytes)
def test_key_state_decode_refuses_or_gives_a_consistent_state(data):
    _decode_or_refuse(data)


@FAST
@given(_model_bytes)
def test_model_state_decode_raises_only_value_error(data):
    _decode_model_or_refuse(data)


@pytest.mark.slow
@LONG
@given(_key_bytes)
def test_key_state_decode_long_fuzz(data):
    _decode_or_refuse(data)


@pytest.mark.slow
@LONG
@given(_model_bytes)
def test_model_state_decode_long_fuzz(data):
    _decode_model_or_refuse(data)


def test_every_truncation_is_refused():
    s = KeyState(_model(2, ("x", "y")), ("x", "y"), np.ones((2, 2)), ["a", 2], 5.0,
                 np.zeros(3), np.ones((2, 2)))
    # (coder, bytes, the one shorter prefix that is a whole state: without its optional tail)
    cases = [(KC, KC.encode(s), None), (MC, MC.encode(s.model), len(b'["x","y"]')),
             (KC, _legacy(pending=np.ones((1, 2)), ids=b'["e"]'), len(b'["e"]'))]
    for coder, data, tail in cases:
        for n in range(len(data)):
            if tail is not None and n == len(data) - tail:
                coder.decode(data[:n])
                continue
            with pytest.raises(ValueError, match="not an encoded streamrbf"):
                coder.decode(data[:n])


# --------------------------------------------------------------------------- each malformed case
_ROW, _ROW2, _ROW3 = (np.zeros(n).tobytes() for n in (1, 2, 3))
_DEEP = b"[" * 100_000

MALFORMED = {
    "SRK1 alone": (b"SRK1", "25 bytes for its header, only 4 left"),
    "truncated header": (_key()[:12], "its header"),
    "no model size": (HEAD.pack(b"SRK1", 0, math.nan, 0, 0, -1), "its model's size"),
    "names not a list": (_key(names=b"123"), "feature names must be a JSON list of strings"),
    "names null": (_key(names=b"null"), "feature names must be a JSON list of strings"),
    "names of numbers": (_key(names=b"[1, 2]"), "feature names must be a JSON list of strings"),
    "names nested deeply": (_key(names=_DEEP), "feature names are JSON nested too deeply"),
    "names not UTF-8": (_key(names=b'["\xff"]'), "feature names are not UTF-8"),
    "names not JSON": (_key(names=b'["x"'), "feature names are not JSON"),
    "names longer than the bytes": (_key(names=b'["x"]', n_names=10**6),
                                    "1000000 bytes for its feature names"),
    "names length -7": (_key(n_names=-7), "feature names of length -7"),
    "huge pending rows": (_key(m=2**32 - 1, d=2**32 - 1), "pending rows of 4294967295 features"),
    "pending rows without features": (_key(m=3, d=0), "3 pending rows of 0 features"),
    "features without pending rows": (_key(m=0, d=2), "0 pending rows of 2 features"),
    "huge detector": (_key(DETECTOR, tail=struct.pack("<II", 2**32 - 1, 2**32 - 1)),
                      "its drift detector memory"),
    "truncated detector shape": (_key(DETECTOR), "the shape of its drift detector memory"),
    "huge recent rows": (_key(RECENT, tail=struct.pack("<II", 2**31, 2**31)),
                         "its rows since a drift alarm"),
    "3 ids for 1 pending row": (_key(IDS, m=1, d=2, names=b'["x","y"]', pending=_ROW2,
                                     tail=b'["a","b","c"]'), "3 event ids for 1 pending rows"),
    "ids = 5": (_key(IDS, m=1, d=1, pending=_ROW, tail=b"5"), "event ids must be a JSON list"),
    "ids without pending rows": (_key(IDS, tail=b'["a"]'), "event ids without pending rows"),
    "ids not JSON": (_key(IDS, m=1, d=1, pending=_ROW, tail=b"["), "event ids are not JSON"),
    "ids nested deeply": (_key(IDS, m=1, d=1, pending=_ROW, tail=_DEEP),
                          "event ids are JSON nested too deeply"),
    "ids not UTF-8": (_key(IDS, m=1, d=1, pending=_ROW, tail=b'["\xfe"]'),
                      "event ids are not UTF-8"),
    "id a float": (_key(IDS, m=1, d=1, pending=_ROW, tail=b"[1.5]"), "got float"),
    "id a bool": (_key(IDS, m=1, d=1, pending=_ROW, tail=b"[true]"), "got bool"),
    "id a lone surrogate": (_key(IDS, m=1, d=1, pending=_ROW, tail=b'["\\ud800"]'),
                            "valid Unicode text"),
    "1 name for d=2": (_key(m=1, d=2, names=b'["x"]', pending=_ROW2),
                       "1 feature names for 2 features"),
    "pending NaN": (_key(m=1, d=1, pending=np.array([math.nan]).tobytes()),
                    "pending rows hold NaN or infinity"),
    "pending infinity": (_key(m=1, d=1, pending=np.array([-math.inf]).tobytes()),
                         "pending rows hold NaN or infinity"),
    "model d=2, pending d=3": (_key(MODEL, m=1, d=3, pending=_ROW3, model=MC.encode(_model())),
                               "pending rows have 3 features, its model 2"),
    "names not the model's": (_key(MODEL, names=b'["x","z"]',
                                   model=MC.encode(_model(2, ("x", "y")))),
                              "feature names \\['x', 'z'\\] are not its model's"),
    "model of 2 models": (_key(MODEL, model=MC.encode(ModelState(
        np.zeros((2, 1, 1)), np.ones((2, 1)), np.ones(2), np.ones(2), np.zeros(2),
        np.zeros(2, np.int64), np.zeros(2, np.int64), np.zeros(2, np.uint64)))), "not one model"),
    "model flag without model": (_key(MODEL), "its model is not an encoded streamrbf model state"),
    "corrupt model": (_key(MODEL, model=MC.encode(_model())[:-3]), "its model is not an encoded"),
    "model without the flag": (_key(model=MC.encode(_model())), "without the model flag"),
    "recent rows of another width": (
        _key(MODEL | RECENT, model=MC.encode(_model()),
             tail=struct.pack("<II", 1, 3) + _ROW3), "rows since a drift alarm have 3 features"),
    "recent rows without features": (
        _key(MODEL | RECENT, model=MC.encode(_model()), tail=struct.pack("<II", 2, 0) + _ROW2),
        "rows since a drift alarm have no features"),
    "recent rows NaN": (
        _key(MODEL | RECENT, model=MC.encode(_model()),
             tail=struct.pack("<II", 1, 2) + np.array([0, math.nan]).tobytes()),
        "rows since a drift alarm hold NaN"),
    "unknown flag bits": (_key(0xF0), "unknown flags 0xf0"),
    "flush time infinite": (_key(flush_at=math.inf), "flush time inf is not finite"),
    "bytes after the end": (_key() + b"x", "1 bytes after the end"),
    "another magic": (b"SRK2" + bytes(40), "magic b'SRK2'"),
    "empty": (b"", "magic b''"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_key_state_is_refused_saying_why(case):
    data, why = MALFORMED[case]
    with pytest.raises(ValueError, match=f"^not an encoded streamrbf key state: .*{why}"):
        KC.decode(data)


_C1 = np.zeros((1, 1))
LEGACY_BAD = {
    "NaN centre": (dict(centers=np.array([[math.nan]]), names=b""), "centres hold NaN"),
    "count -5": (dict(centers=_C1, counts=np.array([-5.0]), names=b""), "masses must be"),
    "temperature -1": (dict(t=-1.0), "temperatures must be > 0"),
    "initial temperature 0": (dict(t0=0.0), "initial temperatures must be > 0"),
    "minimum temperature NaN": (dict(tmin=math.nan), "minimum temperatures must be >= 0"),
    "n_steps -3": (dict(steps=-3), "counters must be >= 0"),
    "n_seen -3": (dict(seen=-3), "counters must be >= 0"),
    "wide flag 2": (dict(wide=2), "centre width flag 2"),
    "flush time -inf": (dict(flush_at=-math.inf), "flush time -inf is not finite"),
    "names not a list": (dict(names=b"123"), "feature names must be a JSON list of strings"),
    "1 name for d=2": (dict(names=b'["a"]'), "1 feature names for 2 features"),
    "pending NaN": (dict(pending=np.array([[0.0, math.nan]])), "pending rows hold NaN"),
    "2 ids for 1 row": (dict(pending=np.ones((1, 2)), ids=b'["a","b"]'),
                        "2 event ids for 1 pending rows"),
    "ids without rows": (dict(ids=b'["a"]'), "event ids without pending rows"),
    "ids not a list": (dict(pending=np.ones((1, 2)), ids=b'{"a": 1}'),
                       "event ids must be a JSON list"),
}


@pytest.mark.parametrize(("case", "magic"), [
    (case, magic) for case in LEGACY_BAD for magic in (b"SRB1", b"SRB2")
    if magic == b"SRB2" or "flush_at" not in LEGACY_BAD[case][0]])  # (SRB1 has no flush time)
def test_invalid_legacy_state_is_refused_like_a_current_one(case, magic):
    fields, why = LEGACY_BAD[case]
    with pytest.raises(ValueError, match=f"^not an encoded streamrbf key state: .*{why}"):
        KC.decode(_legacy(magic, **fields))


@pytest.mark.parametrize("magic", [b"SRB1", b"SRB2"])
def test_valid_legacy_states_still_decode(magic):
    t = KC.decode(_legacy(magic, pending=np.ones((2, 2)), ids=b'["e1",2]'))
    assert t.model.centers[0].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert (t.feature_names, t.pending_ids, t.n_pending) == (("a", "b"), ["e1", 2], 2)
    assert t.flush_at == (7.0 if magic == b"SRB2" else None)
    truncated = _legacy(magic)[:-1]
    with pytest.raises(ValueError, match="centre counts"):
        KC.decode(truncated)


@pytest.mark.parametrize("data", [None, "SRK1", 5, 3.0, [1, 2]])
def test_what_is_not_bytes_is_refused(data):
    with pytest.raises(ValueError, match="not an encoded streamrbf key state"):
        KC.decode(data)
    with pytest.raises(ValueError, match="not an encoded streamrbf model state"):
        MC.decode(data)


def test_bytearray_and_memoryview_decode_like_bytes():
    s = KeyState(_model(), None, np.ones((1, 2)), [3])
    data = KC.encode(s)
    for view in (bytearray(data), memoryview(data)):
        assert KC.encode(KC.decode(view)) == data
        assert MC.encode(MC.decode(type(view)(MC.encode(s.model)))) == MC.encode(s.model)


def test_model_names_it_could_not_write_back_are_refused():
    # A lone surrogate decodes from JSON ("\ud800"), but state_to_bytes cannot write it as UTF-8.
    good = MC.encode(_model(1, None, k=1))
    data = good + b'["\\ud800"]'
    with pytest.raises(ValueError, match="not valid Unicode text"):
        MC.decode(data)
    with pytest.raises(ValueError, match="not valid Unicode text"):
        KC.decode(_key(MODEL, model=data))


def test_a_feature_name_the_state_could_not_hold_is_a_dead_letter():
    # A lone surrogate passes JSON and Python but not UTF-8: refused when the event is parsed,
    # before a model named by it could fail to encode in the middle of a step.
    from streamrbf.beam import parse_features

    with pytest.raises(ValueError, match="feature name '\\\\ud800' is not valid Unicode text"):
        parse_features({"\ud800": 1.0, "b": 2.0})
    assert parse_features({"température": 1.0}) == (("température",), (1.0,))
