"""Bad events: the dead-letter record and the parser that decides what is bad.

Every event entering a streamrbf transform leaves as exactly one result or one :class:`DeadLetter`
carrying the reason, so nothing is dropped silently and a bad event never reaches a model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np

from ..core.validation import (
    FeatureCountError,
    InputError,
    MissingFeatureError,
    UnknownFeatureError,
    ValueTooLargeError,
    check_limit,
    to_real,
    value_limit,
)

__all__ = ["DEAD_LETTERS", "DeadLetter", "ValidateEvents", "parse_features", "parse_keyed"]

_MAX_EVENT_CHARS = 2000


class DeadLetter(NamedTuple):
    """An event that could not be clustered, with the reason.

    Build one with :meth:`of`, which turns any key and event into text; write it with
    :meth:`to_json`.

    Attributes
    ----------
    key : str or None
        The event's key (its ``repr`` when not a str; None for unkeyed events or a bad key).
    event : str
        The event as text, truncated to 2000 characters.
    reason : str
        Why it was refused (the validation error's message).
    stage : str
        Which step refused it: ``"parse"`` or ``"model"``.
    event_id : str or int or None
        The event's id, for transforms given an ``id_field`` (every model-stage dead letter of
        :class:`~streamrbf.beam.ClusterPerKey` carries it, so that a dead letter joins back to
        its event even when ``event`` is truncated); None otherwise.

    Examples
    --------
    >>> d = DeadLetter.of("s1", {"x": "a"}, "feature 'x' is not a real number")
    >>> d.key, d.event, d.stage
    ('s1', "{'x': 'a'}", 'parse')
    >>> print(d.to_json())
    {"key": "s1", "event": "{'x': 'a'}", "reason": "feature 'x' is not a real number",
     "stage": "parse"}
    >>> DeadLetter.of("s1", [1e300], "too large", "model", event_id="e7").to_json()
    '{"key": "s1", "event": "[1e+300]", "reason": "too large", "stage": "model", "id": "e7"}'
    """

    key: str | None
    event: str
    reason: str
    stage: str = "parse"
    event_id: str | int | None = None

    @classmethod
    def of(cls, key: Any, event: Any, reason: str, stage: str = "parse",
           event_id: str | int | None = None) -> DeadLetter:
        """A dead letter for any ``key`` and ``event``: text is kept, bytes decoded (invalid
        UTF-8 replaced), anything else written with ``repr``; the event is truncated.

        Key, event and reason are made safe for UTF-8 (lone surrogates become backslash
        escapes), so Beam's string coders never fail on a dead letter.

        Parameters
        ----------
        key
            The event's key: a str is kept, None stays None, anything else becomes its ``repr``.
        event
            The refused event, in any form.
        reason
            Why it was refused.
        stage
            Which step refused it: ``"parse"`` or ``"model"``.
        event_id
            The event's id (a str or an int, kept as it is; a str made safe for UTF-8), or None.

        Returns
        -------
        DeadLetter
            The record, its event truncated to 2000 characters.

        Examples
        --------
        >>> d = DeadLetter.of(7, "x" * 5000, "bad", event_id=12)
        >>> d.key, len(d.event), d.event_id
        ('7', 2000, 12)
        """
        text = event if isinstance(event, str) else _repr(event)
        if isinstance(event, bytes):
            text = event.decode("utf-8", "replace")
        key = key if isinstance(key, str) or key is None else _repr(key)
        key = None if key is None else _utf8_safe(key)
        if isinstance(event_id, str):
            event_id = _utf8_safe(event_id)
        return cls(key, _utf8_safe(text[:_MAX_EVENT_CHARS]), _utf8_safe(reason), stage, event_id)

    @classmethod
    def of_element(cls, element: Any, reason: str, keyed: bool = True) -> DeadLetter:
        """A parse-stage dead letter for a raw input element: a ``(key, event)`` pair gives its
        key (when ``keyed``), anything else is the event itself.

        Parameters
        ----------
        element
            The raw input element.
        reason
            Why it was refused.
        keyed
            Whether the input is keyed: only then is a two-item tuple or list split into its key
            and event.

        Returns
        -------
        DeadLetter
            A dead letter of stage ``"parse"`` (see :meth:`of`).

        Examples
        --------
        >>> DeadLetter.of_element(("s1", [1, "x"]), "feature #1 is not a real number").key
        's1'
        >>> DeadLetter.of_element("just text", "expected a (key, features) pair").key is None
        True
        """
        key = None
        if keyed and isinstance(element, (tuple, list)) and len(element) == 2:
            key, element = element
        return cls.of(key, element, reason)

    def to_json(self) -> str:
        """One JSON line (what the main job writes).

        Returns
        -------
        str
            A JSON object with the fields ``key``, ``event``, ``reason`` and ``stage``, and
            ``id`` when :attr:`event_id` is not None; without a trailing newline.

        Examples
        --------
        >>> DeadLetter("s1", "{}", "no features").to_json()
        '{"key": "s1", "event": "{}", "reason": "no features", "stage": "parse"}'
        """
        out: dict[str, Any] = {"key": self.key, "event": self.event, "reason": self.reason,
                               "stage": self.stage}
        if self.event_id is not None:
            out["id"] = self.event_id
        return json.dumps(out)


def _repr(x: Any) -> str:
    """``repr(x)``, or a note of what could not be written (Python refuses to write ints of
    over 4300 digits, and a user type's ``__repr__`` may raise)."""
    try:
        return repr(x)
    except Exception as err:  # noqa: BLE001 - a dead letter must never fail to be made
        return f"<{type(x).__name__} that cannot be written out: {err}>"


def _utf8_safe(text: str) -> str:
    """``text``, with what UTF-8 cannot encode (lone surrogates, which JSON text may carry)
    written as backslash escapes: Beam's string coders would fail on them.

    Examples
    --------
    >>> _utf8_safe("caf\\u00e9"), _utf8_safe("bad\\ud800")
    ('café', 'bad\\\\ud800')
    """
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def is_utf8_text(text: str) -> bool:
    """Whether ``text`` can be encoded as UTF-8 (no lone surrogates): keys and ids must be.

    Examples
    --------
    >>> is_utf8_text("sensor-7"), is_utf8_text("caf\\u00e9"), is_utf8_text("bad\\ud800")
    (True, True, False)
    """
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# Each value is first checked to be a finite real number (the value rule with no limit but the
# float range), then the event against the limit for its number of features.
_FINITE = float(np.finfo(np.float64).max)


def _real(label: str, value: Any) -> float:
    return to_real(label, value, _FINITE)


def parse_features(
    features: Any,
    feature_names: Sequence[str] | None = None,
    n_features: int | None = None,
) -> tuple[tuple[str, ...] | None, tuple[float, ...]]:
    """Validate one event's features; return ``(names, values)``.

    Parameters
    ----------
    features
        A dict ``{name: number}`` (ordered by ``feature_names``, else by sorted name), a 1-D
        sequence or array of numbers, or a JSON string / bytes of either.
    feature_names
        The expected names: a dict must have exactly these keys; a sequence gets these names
        and must have as many values.
    n_features
        The expected number of values.

    Returns
    -------
    tuple
        ``(names, values)``: the feature names (None for a sequence without ``feature_names``)
        and the values as floats.

    Raises
    ------
    ValueError
        Unparseable text, a missing or unexpected feature, a value that is not a finite real
        number or too large to cluster: the value rule of
        :mod:`streamrbf.core.validation` (its errors, ``InputError`` kinds); the wrong dimension;
        the message says which.
    TypeError
        An event that is neither a dict, a sequence nor text, or a dict with non-str keys.

    Examples
    --------
    >>> parse_features({"b": 2, "a": 1.5})
    (('a', 'b'), (1.5, 2.0))
    >>> parse_features("[1, 2]", n_features=3)
    Traceback (most recent call last):
    ...
    streamrbf.core.validation.FeatureCountError: expected 3 features, got 2
    """
    if isinstance(features, (str, bytes)):
        try:
            features = json.loads(features)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"unparseable event: {err}") from None
    if isinstance(features, Mapping):
        names, values = _dict_values(features, feature_names)
    else:
        plain = _plain_values(features)
        values = plain if plain is not None else _sequence_values(features)
        names = None if feature_names is None else tuple(feature_names)
        if names is not None and len(values) != len(names):
            raise FeatureCountError(f"expected {len(names)} features, got {len(values)}")
    if n_features is not None and len(values) != n_features:
        raise FeatureCountError(f"expected {n_features} features, got {len(values)}")
    _check_magnitude(names, values)
    return names, values


def _dict_values(features: Mapping, feature_names: Sequence[str] | None
                 ) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """The names and values of a dict event, in the order of ``feature_names`` (or sorted)."""
    keys = list(features)
    if not all(isinstance(k, str) for k in keys):
        raise TypeError(f"feature names must be strings, got {keys!r}")
    if feature_names is not None:
        missing = [f for f in feature_names if f not in features]
        extra = sorted(set(keys) - set(feature_names))
        if missing:
            raise MissingFeatureError(f"missing features {missing}")
        if extra:
            raise UnknownFeatureError(f"unexpected features {extra}")
        names = tuple(feature_names)
    else:
        names = tuple(sorted(keys))
    if not names:
        raise InputError("event has no features")
    bad = next((n for n in names if not is_utf8_text(n)), None)
    if bad is not None:  # (a model's state and files hold its names as UTF-8)
        raise InputError(f"feature name {bad!r} is not valid Unicode text")
    return names, tuple(_real(repr(n), features[n]) for n in names)


def _plain_values(features: Any) -> tuple[float, ...] | None:
    """The fast path for the common case, a list or tuple of finite floats and ints: their values
    in one pass with one finiteness check; None for anything else (the full check then names
    what is wrong; an int beyond any float is one of those)."""
    if not (type(features) in (list, tuple) and features
            and all(type(v) is float or type(v) is int for v in features)):
        return None
    try:
        values = tuple(map(float, features))
    except OverflowError:
        return None
    if math.isfinite(sum(values)) or all(map(math.isfinite, values)):
        return values
    return None


def _sequence_values(features: Any) -> tuple[float, ...]:
    """The values of a sequence event (a list, a tuple or a 1-D array), each checked."""
    if isinstance(features, np.ndarray):
        if features.ndim != 1:
            raise InputError(f"features must be 1-D, got shape {features.shape}")
        features = features.tolist()
    if not isinstance(features, (list, tuple)):
        raise TypeError(
            "features must be a dict, a 1-D sequence or JSON text, got "
            f"{type(features).__name__}"
        )
    if not features:
        raise InputError("event has no features")
    return tuple(_real(f"#{i}", v) for i, v in enumerate(features))


def _check_magnitude(names: tuple[str, ...] | None, values: Sequence[float],
                     dtype: Any = np.float64) -> None:
    """The value rule's limit for an event of ``len(values)`` features (models whose centres
    are ``dtype``)."""
    check_limit(np.asarray([values], dtype=np.float64), value_limit(len(values), dtype), names)


def too_large_reason(names: Sequence[str] | None, values: Sequence[float],
                     dtype: Any = np.float64) -> str:
    """Why an event with a value beyond the value rule's limit is refused (it names the first
    such feature); ``dtype``: the centres' (float32 centres take less).

    Examples
    --------
    >>> too_large_reason(("x", "y"), [1.0, 1e200])[:40]
    "feature 'y' = 1e+200 is too large to clu"
    >>> "float32 range" in too_large_reason(None, [1e39], np.float32)
    True
    """
    try:
        _check_magnitude(None if names is None else tuple(names), values, dtype)
    except ValueTooLargeError as err:
        return str(err)
    raise ValueError("no value is too large")


def parse_keyed(
    element: Any,
    feature_names: Sequence[str] | None = None,
    n_features: int | None = None,
) -> tuple[str, tuple[tuple[str, ...] | None, tuple[float, ...]]]:
    """Validate a ``(key, features)`` pair; the key must be a non-empty ``str``.

    Parameters
    ----------
    element
        A ``(key, features)`` tuple or 2-element list.
    feature_names
        Passed to :func:`parse_features`.
    n_features
        Passed to :func:`parse_features`.

    Returns
    -------
    tuple
        ``(key, (names, values))``.

    Raises
    ------
    TypeError
        When ``element`` is not a pair or the key is not a non-empty ``str``.
    ValueError
        When the features are invalid (see :func:`parse_features`).

    Examples
    --------
    >>> parse_keyed(("s1", [1, 2]))
    ('s1', (None, (1.0, 2.0)))
    >>> parse_keyed((7, [1, 2]))
    Traceback (most recent call last):
    ...
    TypeError: key must be a non-empty str, got int 7
    """
    key, features = _pair(element)
    return key, parse_features(features, feature_names, n_features)


def _pair(element: Any) -> tuple[str, Any]:
    if not isinstance(element, (tuple, list)) or len(element) != 2:
        raise TypeError(f"expected a (key, features) pair, got {type(element).__name__}")
    key, features = element
    if not isinstance(key, str) or not key:
        raise TypeError(f"key must be a non-empty str, got {type(key).__name__} {key!r}")
    if not is_utf8_text(key):
        raise ValueError(f"key {key!r} is not valid Unicode text (a lone surrogate)")
    return key, features


# Int ids up to 1024 bits (~308 digits): far beyond any id, well within JSON's int text limit.
_MAX_ID_BITS = 1024


def _field_of(event: Any, field: str, not_a_dict: str, missing: str) -> tuple[Mapping, Any]:
    """A dict event (or JSON text of one) and the value of its ``field``: a ``TypeError``
    (``not_a_dict``, then what the event is) or ``ValueError`` (``missing``) otherwise."""
    if isinstance(event, (str, bytes)):
        try:
            event = json.loads(event)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"unparseable event: {err}") from None
    if not isinstance(event, Mapping):
        raise TypeError(f"{not_a_dict}, got {type(event).__name__}")
    if field not in event:
        raise ValueError(missing)
    return event, event[field]


def _pop_event_id(event: Any, id_field: str) -> tuple[str | int, Any]:
    """Split a dict event (or JSON text of one) into ``(id, the other fields)``.

    The id must be a ``str`` or an ``int`` (not a bool); anything else, or an event that is not a
    dict, raises ``ValueError`` / ``TypeError`` saying why.

    Examples
    --------
    >>> _pop_event_id('{"id": 7, "x": 1.5}', "id")
    (7, {'x': 1.5})
    >>> _pop_event_id({"x": 1.5}, "id")
    Traceback (most recent call last):
    ...
    ValueError: event has no 'id' field
    >>> _pop_event_id({"id": 1.0, "x": 1.5}, "id")
    Traceback (most recent call last):
    ...
    TypeError: 'id' must be a str or int, got float
    """
    event, event_id = _field_of(event, id_field,
                                f"an event with ids must be a dict with an {id_field!r} field",
                                f"event has no {id_field!r} field")
    if isinstance(event_id, str):
        event_id = str(event_id)
        if not is_utf8_text(event_id):
            raise ValueError(f"{id_field!r} {event_id!r} is not valid Unicode text")
    elif isinstance(event_id, int) and not isinstance(event_id, bool):
        event_id = int(event_id)
        if event_id.bit_length() > _MAX_ID_BITS:
            # Ids travel as JSON text, and Python refuses to write ints of over 4300 digits.
            raise ValueError(f"{id_field!r} is an int of {event_id.bit_length()} bits; ids may "
                             f"have at most {_MAX_ID_BITS} (use a str for longer ones)")
    else:
        raise TypeError(f"{id_field!r} must be a str or int, got {type(event_id).__name__}")
    return event_id, {k: v for k, v in event.items() if k != id_field}


def parse_weighted(
    event: Any,
    weight_field: str,
    feature_names: Sequence[str] | None = None,
    n_features: int | None = None,
) -> tuple[float, ...]:
    """Validate a weighted event: a dict (or JSON text of one) whose ``weight_field`` holds the
    event's weight, a finite real number >= 0; the other fields are its features.

    Parameters
    ----------
    event
        The event.
    weight_field
        The name of the weight's field.
    feature_names
        The expected names of the other fields, as in :func:`parse_features`.
    n_features
        The expected number of feature values (the other fields), as in :func:`parse_features`.

    Returns
    -------
    tuple
        The feature values, then the weight.

    Raises
    ------
    ValueError, TypeError
        A missing or bad weight (the message names the field), or what :func:`parse_features`
        raises for the features.

    Examples
    --------
    >>> parse_weighted({"x": 1.5, "y": 2, "w": 3}, "w")
    (1.5, 2.0, 3.0)
    >>> parse_weighted('{"x": 1.5, "w": -1}', "w")
    Traceback (most recent call last):
    ...
    ValueError: weight field 'w' must be a finite number >= 0, got -1
    """
    event, w = _field_of(event, weight_field,
                         f"a weighted event must be a dict with a {weight_field!r} field",
                         f"event has no weight field {weight_field!r}")
    try:
        weight = _real(f"weight field {weight_field!r}", w)
    except (ValueError, TypeError):
        weight = -1.0
    if not weight >= 0.0:
        raise ValueError(f"weight field {weight_field!r} must be a finite number >= 0, got {w!r}")
    rest = {k: v for k, v in event.items() if k != weight_field}
    return parse_features(rest, feature_names, n_features)[1] + (weight,)


def _parse_keyed_with_id(
    element: Any,
    id_field: str,
    feature_names: Sequence[str] | None = None,
    n_features: int | None = None,
) -> tuple[str, str | int, tuple[tuple[str, ...] | None, tuple[float, ...]]]:
    """:func:`parse_keyed` for dict events carrying an id in ``id_field`` (not a feature):
    ``(key, id, (names, values))``.

    Examples
    --------
    >>> _parse_keyed_with_id(("s1", {"id": "e1", "y": 2, "x": 1}), "id")
    ('s1', 'e1', (('x', 'y'), (1.0, 2.0)))
    """
    key, event = _pair(element)
    event_id, features = _pop_event_id(event, id_field)
    return key, event_id, parse_features(features, feature_names, n_features)


DEAD_LETTERS = "dead_letters"


class _ValidateDoFn(beam.DoFn):
    def __init__(self, keyed: bool, feature_names: tuple[str, ...] | None,
                 n_features: int | None, weight_field: str | None = None) -> None:
        self.keyed = keyed
        self.feature_names = feature_names
        self.n_features = n_features
        self.weight_field = weight_field

    def process(self, element: Any) -> Iterable[Any]:
        try:
            if self.keyed:
                yield parse_keyed(element, self.feature_names, self.n_features)
            elif self.weight_field is not None:
                yield parse_weighted(element, self.weight_field, self.feature_names,
                                     self.n_features)
            else:
                yield parse_features(element, self.feature_names, self.n_features)[1]
        except (ValueError, TypeError, OverflowError) as err:
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTERS, DeadLetter.of_element(element, str(err), self.keyed))


class ValidateEvents(beam.PTransform):
    """Split events into valid ones and :class:`DeadLetter` records; returns ``(valid, dead)``.

    Unkeyed events become tuples of floats (with ``weight_field``: the features, then the
    weight; see :func:`parse_weighted`); keyed events (``keyed=True``) become
    ``(key, (names, values))`` with a ``str`` key.

    Parameters
    ----------
    feature_names
        The expected feature names (see :func:`parse_features`).
    n_features
        The expected number of features.
    keyed
        Whether events are ``(key, features)`` pairs.
    tagged
        ``False`` splits with two filters instead of a multi-output ParDo (for the DaskRunner).
    weight_field
        Unkeyed dict events only: the field holding each event's weight.

    Examples
    --------
    >>> with beam.Pipeline(runner="FnApiRunner") as p:
    ...     good, bad = p | beam.Create([[1, 2], [1, float("nan")], "oops"]) | ValidateEvents()
    ...     _ = bad | beam.Map(lambda d: print(d.reason[:20]))
    feature #1 is NaN (a
    unparseable event: E
    """

    def __init__(self, feature_names: Sequence[str] | None = None, n_features: int | None = None,
                 *, keyed: bool = False, tagged: bool = True,
                 weight_field: str | None = None) -> None:
        super().__init__()
        if keyed and weight_field is not None:
            raise ValueError("weight_field applies to unkeyed events")
        self.weight_field = weight_field
        self.tagged = tagged
        self.feature_names = None if feature_names is None else tuple(feature_names)
        self.n_features = n_features
        self.keyed = keyed

    def expand(self, pcoll):
        """Validate every element of ``pcoll`` (Beam's ``PTransform`` entry point).

        Parameters
        ----------
        pcoll
            The raw events.

        Returns
        -------
        tuple
            ``(valid, dead)``: the parsed events and the :class:`DeadLetter` records.
        """
        fn = _ValidateDoFn(self.keyed, self.feature_names, self.n_features, self.weight_field)
        if not self.tagged:
            # One output and two filters: the DaskRunner mixes a multi-output ParDo's outputs.
            both = pcoll | "Validate" >> beam.FlatMap(lambda e: [
                (isinstance(o, beam.pvalue.TaggedOutput), getattr(o, "value", o))
                for o in fn.process(e)])
            valid = both | "Valid" >> beam.FlatMap(lambda r: [] if r[0] else [r[1]])
            dead = both | "Invalid" >> beam.FlatMap(lambda r: [r[1]] if r[0] else [])
            return valid, dead
        pardo = beam.ParDo(fn)
        if self.keyed:
            # A typed str key gives GroupIntoBatches and state a deterministic key coder.
            pardo = pardo.with_output_types(tuple[str, Any])
        out = pcoll | "Validate" >> pardo.with_outputs(DEAD_LETTERS, main="valid")
        return out.valid, out[DEAD_LETTERS]
