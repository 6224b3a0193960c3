"""What every command of the ``streamrbf`` command line shares: exit codes, errors, progress bars.

The command line (:mod:`streamrbf.cli`), the main job (:mod:`streamrbf.jobs.cluster_events`) and
the benchmarks (:mod:`streamrbf.bench`) report the same way through this one module, which imports
nothing else of streamrbf:

| code | meaning |
| ---: | --- |
| 0 | success |
| 1 | the work failed: no file matches ``--input``, a file cannot be read or written, an error |
| 2 | bad usage: unknown command or flag, a missing or bad flag value (argparse's message) |
| 3 | a model file was refused: missing, not a streamrbf model, or corrupt (``inspect``) |
| 4 | too many dead letters: over ``--max_dead_letter_share`` of the events (outputs written) |
| 130 | interrupted (Ctrl-C) |
| 141 | stdout was closed early (piped into ``head``, say): stops quietly, as on SIGPIPE |

"An error" is one raised inside the pipeline or a benchmark suite. A missing ``--input`` file is
exit code 1, not 2: the command line is well formed, the data is not there (as with ``cat``).
Errors are one line on stderr, ``streamrbf COMMAND: error: WHY``; an unexpected exception (a bug,
or an error inside the pipeline) prints its traceback first, and still ends with that line and
exit code 1. Progress bars go to stderr, only when stderr is a terminal, and never with
``--no-progress`` or ``--quiet``.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TextIO

__all__ = ["EXIT_TOO_MANY_DEAD_LETTERS", "CommandError", "progress_bar", "progress_enabled",
           "run_command"]

#: The exit code of a run whose dead letters' share of the events exceeds
#: ``--max_dead_letter_share`` (``run``, ``replay``): its outputs are written.
EXIT_TOO_MANY_DEAD_LETTERS = 4

EXIT_CODES = """\
exit codes:
  0    success
  1    the work failed (an --input pattern matches no file, an unreadable input, an unwritable
       output, an error in the pipeline or a benchmark suite)
  2    bad usage: unknown command or flag, a missing or bad flag value (argparse's message)
  3    a model file was refused: missing, not a streamrbf model, or corrupt (inspect)
  4    too many dead letters: more than --max_dead_letter_share of the events (run, replay;
       the outputs are written)
  130  interrupted (Ctrl-C)
  141  stdout closed early (| head): stops quietly, as on SIGPIPE
errors are one line on stderr: "streamrbf COMMAND: error: WHY".
"""


class CommandError(Exception):
    """A failure the command reports as one line on stderr (no traceback), with an exit code.

    Examples
    --------
    >>> err = CommandError("no input file matches 'x.jsonl'")
    >>> str(err), err.exit_code
    ("no input file matches 'x.jsonl'", 1)
    >>> CommandError("refused", exit_code=3).exit_code
    3
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def progress_enabled(disabled: bool = False, stream: TextIO | None = None) -> bool:
    """Whether to draw progress bars on ``stream`` (default stderr): only on a terminal, and not
    when ``disabled`` (``--no-progress`` / ``--quiet``).

    Parameters
    ----------
    disabled
        Whether the user turned progress bars off.
    stream
        Where the bars would go; None means ``sys.stderr``.

    Returns
    -------
    bool
        True when not ``disabled`` and ``stream.isatty()`` is true; False also for a stream
        without ``isatty`` or a closed one.

    Examples
    --------
    >>> import io
    >>> progress_enabled(stream=io.StringIO())  # a pipe, a file, a captured stream
    False
    >>> class Terminal(io.StringIO):
    ...     def isatty(self):
    ...         return True
    >>> progress_enabled(stream=Terminal()), progress_enabled(True, stream=Terminal())
    (True, False)
    """
    if disabled:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def progress_bar(stream: TextIO | None = None, **kwargs: Any) -> Any:
    """A ``tqdm`` bar on ``stream`` (default stderr) that fits the terminal, also one that reports
    a size of 0 x 0 (some pseudo-terminals do; tqdm then draws nothing): 80 x 24 is assumed.

    Call it only when :func:`progress_enabled` says so; ``kwargs`` go to ``tqdm``.

    Parameters
    ----------
    stream
        Where the bar is drawn; None means ``sys.stderr``.
    **kwargs
        Any ``tqdm`` argument (``total``, ``desc``, ``unit``, ...); they override the size.

    Returns
    -------
    tqdm.tqdm
        The bar (close it when done).

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> bar = progress_bar(out, total=4, desc="demo", unit=" events")
    >>> bar.update(4); bar.close()
    >>> "demo: 100%" in out.getvalue() and "4/4" in out.getvalue()
    True
    """
    import os

    from tqdm import tqdm

    stream = sys.stderr if stream is None else stream
    try:
        cols, rows = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):  # not a real terminal (a test's stand-in)
        cols = rows = 0
    if cols > 0 and rows > 0:
        size: dict[str, Any] = {"dynamic_ncols": True}
    else:
        size = {"ncols": cols or 80, "nrows": rows or 24}
    return tqdm(file=stream, **{**size, **kwargs})


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("streamrbf")
    except PackageNotFoundError:  # a source checkout that was not installed
        from streamrbf import __version__

        return __version__


class Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=100)


def checked(convert: Callable[[str], Any], ok: Callable[[Any], bool], what: str):
    """An argparse ``type``: ``convert`` the text, then refuse values that are not ``ok``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = checked(int, lambda v: v >= 1, "a whole number >= 1")
fraction = checked(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
probability = checked(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
positive_float = checked(float, lambda v: 0 < v < float("inf"), "a number > 0")


def auto_or(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` that takes ``auto`` as it is and anything else through ``parse``."""

    def parse_auto(text: str) -> Any:
        return "auto" if text == "auto" else parse(text)

    return parse_auto



def run_command(prog: str, command: Callable[[Sequence[str]], int], argv: Sequence[str]) -> int:
    """Run ``command(argv)`` and turn what it raises into an exit code and one line on stderr.

    Parameters
    ----------
    prog
        How error lines name the command (``"streamrbf run"``).
    command
        The command: takes its flags, returns an exit code.
    argv
        The command's flags.

    Returns
    -------
    int
        The exit code (see the module docstring); it never raises.

    Examples
    --------
    >>> def fails(argv):
    ...     raise CommandError("no input file matches 'x.jsonl'")
    >>> run_command("demo", fails, [])  # stderr: "demo: error: no input file matches 'x.jsonl'"
    1
    >>> run_command("demo", lambda argv: 0, [])
    0
    """
    try:
        return command(argv)
    except SystemExit as stop:  # argparse: --help / --version (0) or a usage error (2)
        code = stop.code
        if code is None or isinstance(code, int):
            return code or 0
        print(f"{prog}: error: {code}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (| head): stop quietly, as a SIGPIPE would
        _silence_stdout()
        return 141
    except CommandError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # a file that cannot be read or written: one line is enough
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except Exception as err:
        traceback.print_exc()
        print(f"{prog}: error: {type(err).__name__}: {_one_line(err)}", file=sys.stderr)
        return 1


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
    except (OSError, ValueError, AttributeError):
        pass


def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
