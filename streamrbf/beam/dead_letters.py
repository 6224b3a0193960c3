"""Bad events: the dead-letter record and the parser that decides what is bad.

Every event entering a streamrbf transform leaves as exactly one result or one :class:`DeadLetter`
carrying the reason, so nothing is dropped silently and a bad event never reaches a model.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np

from ..core.validation import max_abs_value

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

    Examples
    --------
    >>> d = DeadLetter.of("s1", {"x": "a"}, "feature 'x' is not a real number")
    >>> d.key, d.event, d.stage
    ('s1', "{'x': 'a'}", 'parse')
    >>> print(d.to_json())
    {"key": "s1", "event": "{'x': 'a'}", "reason": "feature 'x' is not a real number",
     "stage": "parse"}
    """

    key: str | None
    event: str
    reason: str
    stage: str = "parse"

    @classmethod
    def of(cls, key: Any, event: Any, reason: str, stage: str = "parse") -> DeadLetter:
        """A dead letter for any ``key`` and ``event``: text is kept, bytes decoded (invalid
        UTF-8 replaced), anything else written with ``repr``; the event is truncated."""
        text = event if isinstance(event, str) else _repr(event)
        if isinstance(event, bytes):
            text = event.decode("utf-8", "replace")
        key = key if isinstance(key, str) or key is None else _repr(key)
        key = None if key is None else _utf8_safe(key)
        return cls(key, _utf8_safe(text[:_MAX_EVENT_CHARS]), _utf8_safe(reason), stage)

    @classmethod
    def of_element(cls, element: Any, reason: str, keyed: bool = True) -> DeadLetter:
        """A parse-stage dead letter for a raw input element: a ``(key, event)`` pair gives its
        key (when ``keyed``), anything else is the event itself.

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
        """One JSON line (what the main job writes)."""
        return json.dumps(self._asdict())


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


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise ValueError(f"feature {name} is not a real number: {value!r}")
    try:
        v = float(value)
    except OverflowError:  # an int (or Fraction) beyond any float
        raise ValueError(f"feature {name} is too large to cluster (beyond any float)") from None
    if not math.isfinite(v):
        raise ValueError(f"feature {name} is {'NaN' if v != v else 'infinite'}")
    return v


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
        number or too large to cluster (:func:`~streamrbf.core.validation.max_abs_value`), the wrong
        dimension; the message says which.
    TypeError
        An event that is neither a dict, a sequence nor text, or a dict with non-str keys.

    Examples
    --------
    >>> parse_features({"b": 2, "a": 1.5})
    (('a', 'b'), (1.5, 2.0))
    >>> parse_features("[1, 2]", n_features=3)
    Traceback (most recent call last):
    ...
    ValueError: expected 3 features, got 2
    """
    if isinstance(features, (str, bytes)):
        try:
            features = json.loads(features)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"unparseable event: {err}") from None
    if isinstance(features, Mapping):
        keys = list(features)
        if not all(isinstance(k, str) for k in keys):
            raise TypeError(f"feature names must be strings, got {keys!r}")
        if feature_names is not None:
            missing = [f for f in feature_names if f not in features]
            extra = sorted(set(keys) - set(feature_names))
            if missing:
                raise ValueError(f"missing features {missing}")
            if extra:
                raise ValueError(f"unexpected features {extra}")
            names = tuple(feature_names)
        else:
            names = tuple(sorted(keys))
        if not names:
            raise ValueError("event has no features")
        values = tuple(_real(repr(n), features[n]) for n in names)
    else:
        if type(features) in (list, tuple) and features and all(
            type(v) is float or type(v) is int for v in features
        ):
            # Fast path for the common case (plain numbers): one pass, one finiteness check
            # (an int beyond any float takes the full check, which names it).
            try:
                values = tuple(map(float, features))
            except OverflowError:
                values = (math.nan,)
            if math.isfinite(sum(values)) or all(map(math.isfinite, values)):
                if feature_names is not None and len(values) != len(feature_names):
                    raise ValueError(f"expected {len(feature_names)} features, got {len(values)}")
                if n_features is not None and len(values) != n_features:
                    raise ValueError(f"expected {n_features} features, got {len(values)}")
                names = None if feature_names is None else tuple(feature_names)
                _check_magnitude(names, values)
                return names, values
        if isinstance(features, np.ndarray):
            if features.ndim != 1:
                raise ValueError(f"features must be 1-D, got shape {features.shape}")
            features = features.tolist()
        if not isinstance(features, (list, tuple)):
            raise TypeError(
                "features must be a dict, a 1-D sequence or JSON text, got "
                f"{type(features).__name__}"
            )
        if not features:
            raise ValueError("event has no features")
        values = tuple(_real(f"#{i}", v) for i, v in enumerate(features))
        names = None
        if feature_names is not None:
            if len(values) != len(feature_names):
                raise ValueError(f"expected {len(feature_names)} features, got {len(values)}")
            names = tuple(feature_names)
    if n_features is not None and len(values) != n_features:
        raise ValueError(f"expected {n_features} features, got {len(values)}")
    _check_magnitude(names, values)
    return names, values


def _check_magnitude(names: tuple[str, ...] | None, values: Sequence[float]) -> None:
    """Refuse a value too large to cluster (its squared distances could overflow float64)."""
    if len(values) and max(map(abs, values)) > max_abs_value(len(values)):
        raise ValueError(too_large_reason(names, values))


def too_large_reason(names: Sequence[str] | None, values: Sequence[float]) -> str:
    """Why an event with a value beyond :func:`~streamrbf.core.validation.max_abs_value` is refused
    (it names the first such feature)."""
    limit = max_abs_value(len(values))
    i = next(i for i, v in enumerate(values) if abs(v) > limit)
    name = repr(names[i]) if names else f"#{i}"
    return (f"feature {name} = {values[i]:.3g} is too large to cluster (at most {limit:.3g} in "
            f"magnitude with {len(values)} features)")


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
    if isinstance(event, (str, bytes)):
        try:
            event = json.loads(event)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"unparseable event: {err}") from None
    if not isinstance(event, Mapping):
        raise TypeError(f"an event with ids must be a dict with an {id_field!r} field, got "
                        f"{type(event).__name__}")
    if id_field not in event:
        raise ValueError(f"event has no {id_field!r} field")
    event_id = event[id_field]
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
                 n_features: int | None) -> None:
        self.keyed = keyed
        self.feature_names = feature_names
        self.n_features = n_features

    def process(self, element: Any) -> Iterable[Any]:
        try:
            if self.keyed:
                yield parse_keyed(element, self.feature_names, self.n_features)
            else:
                yield parse_features(element, self.feature_names, self.n_features)[1]
        except (ValueError, TypeError, OverflowError) as err:
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTERS, DeadLetter.of_element(element, str(err), self.keyed))


class ValidateEvents(beam.PTransform):
    """Split events into valid ones and :class:`DeadLetter` records; returns ``(valid, dead)``.

    Unkeyed events become tuples of floats; keyed events (``keyed=True``) become
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

    Examples
    --------
    >>> with beam.Pipeline(runner="FnApiRunner") as p:
    ...     good, bad = p | beam.Create([[1, 2], [1, float("nan")], "oops"]) | ValidateEvents()
    ...     _ = bad | beam.Map(lambda d: print(d.reason[:20]))
    feature #1 is NaN
    unparseable event: E
    """

    def __init__(self, feature_names: Sequence[str] | None = None, n_features: int | None = None,
                 *, keyed: bool = False, tagged: bool = True) -> None:
        super().__init__()
        self.tagged = tagged
        self.feature_names = None if feature_names is None else tuple(feature_names)
        self.n_features = n_features
        self.keyed = keyed

    def expand(self, pcoll):
        fn = _ValidateDoFn(self.keyed, self.feature_names, self.n_features)
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
