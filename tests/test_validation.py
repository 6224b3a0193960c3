"""One value rule and one error hierarchy: every face accepts and refuses the same values, for the
same reason, with an error of the same kind (streamrbf.core.validation)."""

from __future__ import annotations

import fractions
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamrbf import RBFKMeans
from streamrbf.beam.dead_letters import parse_features
from streamrbf.core.validation import (
    FeatureTypeError,
    InputError,
    NonFiniteError,
    ValueTooLargeError,
    to_real,
    value_limit,
)
from streamrbf.river import RBFKMeans as RiverKMeans

F32 = float(np.finfo(np.float32).max)

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**1100), 2**1100),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
    st.complex_numbers(allow_nan=False, allow_infinity=False, max_magnitude=10),
    st.fractions(max_denominator=7),
)


def outcome(fn):
    """The value a check returns, or the kind of InputError it raises."""
    try:
        return fn()
    except InputError as err:
        return type(err)


@given(values)
def test_the_rule_returns_a_float_within_the_limit_or_raises_its_kind_of_error(value):
    limit = 1e10
    got = outcome(lambda: to_real("'x'", value, limit))
    if isinstance(got, float):
        assert abs(got) <= limit and got == float(value)
        return
    if isinstance(value, (str, complex)) or value is None:
        assert got is FeatureTypeError
    elif isinstance(value, float) and not math.isfinite(value):
        assert got is NonFiniteError
    else:
        assert got is ValueTooLargeError
        assert abs(value) > limit


def test_the_limit_is_the_dtype_range_and_squared_distances_that_fit_float64():
    assert value_limit(4, np.float32) == F32
    assert value_limit(8) == pytest.approx(math.sqrt(np.finfo(np.float64).max / 64))
    assert value_limit(8) ** 2 * 8 * 4 < np.finfo(np.float64).max  # a margin of 2 in distance


def _river(value):
    model = RiverKMeans(n_clusters=1, warmup=1, seed=0)
    model.learn_one({"x": 0.0, "y": 1.0})
    model.learn_one({"x": value, "y": 0.0})
    return float(model.centers[0]["x"]) if value is not None else None


def _beam(value):
    return parse_features({"x": value, "y": 0.0})[1][0]


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (True, None),
        (fractions.Fraction(1, 3), None),
        (np.float32(2.5), None),
        (float("nan"), NonFiniteError),
        (float("-inf"), NonFiniteError),
        (1e200, ValueTooLargeError),
        (10**400, ValueTooLargeError),
        ("7", FeatureTypeError),
        (None, FeatureTypeError),
        (1 + 2j, FeatureTypeError),
    ],
    ids=str,
)
def test_every_face_accepts_and_refuses_the_same_values_for_the_same_reason(value, kind):
    # River (float32 centres) and Beam (float64 models) differ only in their dtype's limit;
    # both refuse 1e200 (too large for either) and accept True as 1.
    for face in (_river, _beam):
        got = outcome(lambda face=face: face(value))
        if kind is None:
            assert not isinstance(got, type), (face.__name__, got)
        else:
            assert got is kind, (face.__name__, got)


def test_booleans_are_zero_and_one_in_every_face():
    assert _beam(True) == 1.0 and _beam(False) == 0.0
    assert to_real("'x'", np.bool_(True), 1.0) == 1.0
    km = RBFKMeans(2, random_state=0).fit(np.array([[True, False], [False, True]] * 4))
    assert km.predict(np.array([[1.0, 0.0]])).shape == (1,)


def test_array_faces_refuse_too_large_values_with_the_rules_error():
    km = RBFKMeans(2, random_state=0).fit([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    with pytest.raises(ValueTooLargeError, match=r"feature #0 = 1e\+200 is too large"):
        km.predict([[1e200, 0.0]])
    f32 = RBFKMeans(2, random_state=0, dtype="float32").fit([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    with pytest.raises(ValueTooLargeError, match="float32 range of the centres"):
        f32.predict(np.array([[1e39, 0.0]]))  # refused as it is, never turned into inf


@pytest.mark.parametrize("warmup", [2, 2.5, True, "32"])
def test_river_and_beam_refuse_the_same_warmups_with_the_same_words(warmup):
    from streamrbf.beam import ClusterPerKey

    message = f"warmup must be None or an integer >= n_clusters=3, got {warmup!r}"
    with pytest.raises(ValueError, match=message.replace(".", "\\.")):
        RiverKMeans(n_clusters=3, warmup=warmup)
    with pytest.raises(ValueError, match=message.replace(".", "\\.")):
        ClusterPerKey(3, warmup=warmup)
    assert RiverKMeans(n_clusters=3, warmup=3)._warmup_size == ClusterPerKey(3, warmup=3).warmup
