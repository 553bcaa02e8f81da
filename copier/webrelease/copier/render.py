"""Per-customer templates: Jinja2 in its immutable sandbox.

- The build's template files are compiled once per shard (:class:`Templates`) and rendered for
  each customer with the customer's record as the context, plus ``customer`` (the whole record)
  and ``release`` (``name`` and ``source``: values that are the same on every run of a spec, so
  that re-running renders the same bytes and uploads nothing).
- ``StrictUndefined``: a field the customer does not have is an error, never an empty string.
- No autoescaping (the output is JS, JSON, HTML...); the ``json`` filter turns any value into a
  literal that is safe inside JS, JSON and an HTML ``<script>`` (``<``, ``>``, ``&``, U+2028 and
  U+2029 escaped).
- No loader: ``{% include %}``, ``{% import %}`` and ``{% extends %}`` fail, so a template
  reaches nothing but its context. The sandbox refuses access to Python internals
  (``__class__`` and friends) and mutation of the context.
- Limits: the output is capped at :data:`MAX_OUTPUT_BYTES`; ``range()`` at 100,000 items (the
  sandbox's own limit); ``*`` and ``**`` on strings, lists and numbers cannot build huge values;
  macros nest at most :data:`MAX_TEMPLATE_DEPTH` deep; and one file's rendering for one customer
  may use at most ``spec.templateTimeoutSeconds`` (default :data:`TEMPLATE_TIMEOUT_SECONDS`) of
  the rendering thread's CPU time, so a template that loops without output (nested ``range()``s,
  nested loops over literal lists, macros that recurse wide) fails that customer instead of keeping
  the shard busy for ever.

Time limit: Jinja compiles a template to Python code whose ``co_filename`` is ``<template>``.
While a file renders, a trace function (``sys.settrace``: the current thread only, so the shard's
other threads are untouched) gives every frame of that code a line tracer and leaves every other
frame untraced. The line tracer counts events and reads the thread's CPU clock every so many
(about every :data:`_CHECK_SECONDS` of work, at most every :data:`_MAX_STRIDE` events); past the
deadline it raises from inside the template's own frame an exception no template, Jinja or filter
catches. An error while the interpreter *calls* a trace function switches tracing off for the
thread, and Jinja's ``sequence`` test swallows exceptions: so template frames also nest at most
:data:`MAX_TEMPLATE_DEPTH` deep, far from the interpreter's recursion limit, which could otherwise
be hit exactly there. The previous trace function (a debugger, coverage) is restored afterwards.
Cost: the interpreter runs slower while tracing is on (+30 to 45 µs per typical file), so only
the template's own code runs under it.

Any failure is a :class:`RenderError` with a reason that names the file and line; the shard
turns it into that customer's failure.
"""

from __future__ import annotations

import json
import operator
import sys
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any, Final, cast

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from webrelease.copier.spec import TEMPLATE_TIMEOUT_SECONDS
from webrelease.copier.storage import guess_content_type

#: A rendered file larger than this fails (the template is probably looping out of control).
MAX_OUTPUT_BYTES: Final = 10 * 1024 * 1024
#: Largest string / list ``*`` may build, and largest exponent ``**`` may use.
MAX_PRODUCT_LEN: Final = 1_000_000
MAX_EXPONENT: Final = 1_000
#: Template frames (macro calls, ``caller()``, recursive loops) nested deeper than this fail the
#: customer ("recursion too deep"), well before the interpreter's own recursion limit.
MAX_TEMPLATE_DEPTH: Final = 100

#: ``co_filename`` of the code Jinja compiles a template to (``Environment.from_string``).
_TEMPLATE_CODE: Final = "<template>"
#: The line tracer reads the CPU clock after about this much work ...
_CHECK_SECONDS: Final = 0.005
#: ... and at least every this many events of template code.
_MAX_STRIDE: Final = 256

_JS_ESCAPES: Final = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}

# Types we render ourselves and know to be UTF-8: they get an explicit charset.
_TEXTUAL: Final = (
    "text/",
    "application/json",
    "application/manifest+json",
    "application/xml",
    "image/svg+xml",
)


class RenderError(Exception):
    """A template that does not compile or does not render for a customer."""


class _Stopped(BaseException):
    """Raised by the tracer inside a template frame. Not an ``Exception``: neither Jinja
    (``generate`` catches ``Exception``) nor a filter or test can swallow it."""

    def __init__(self, why: str, python_line: int) -> None:
        super().__init__(why)
        self.why = why
        #: the line of the compiled template code that was running
        self.python_line = python_line


class _Limits:
    """The time and depth limits of one render, on the current thread (see the module docstring)."""

    __slots__ = ("_deadline", "_depth", "_last", "_left", "_stride")

    def __init__(self, seconds: float) -> None:
        now = time.thread_time()
        self._deadline = now + seconds
        self._last = now
        self._stride = 16
        self._left = 16
        self._depth = 0

    def trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        """The thread's trace function: called for every new (or resumed) frame, traces only template code."""
        if frame.f_code.co_filename != _TEMPLATE_CODE:
            return None
        self._depth += 1
        if self._depth > MAX_TEMPLATE_DEPTH:
            raise _Stopped("recursion too deep", frame.f_lineno)
        return self._line

    def _line(self, frame: FrameType, event: str, arg: Any) -> Any:
        """A template frame's tracer: every event counts towards the next clock read."""
        if event == "return":
            self._depth -= 1
        self._left -= 1
        if self._left <= 0:
            self._check(frame)
        return self._line

    def _check(self, frame: FrameType) -> None:
        now = time.thread_time()
        if now >= self._deadline:
            raise _Stopped("timeout", frame.f_lineno)
        spent = now - self._last
        self._last = now
        if spent < _CHECK_SECONDS:
            self._stride = min(_MAX_STRIDE, self._stride * 2)
        else:  # slow lines (big filters): read the clock more often
            self._stride = max(1, self._stride // 4)
        self._left = self._stride


def _json_default(value: Any) -> Any:
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()  # raises UndefinedError naming the missing field
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def json_literal(value: Any) -> str:
    """``value`` as a JSON literal that is also safe inside JS source and an HTML ``<script>``."""
    try:
        text = json.dumps(
            value, ensure_ascii=False, allow_nan=False, separators=(", ", ": "), default=_json_default
        )
    except (TypeError, ValueError) as exc:
        raise jinja2.TemplateRuntimeError(f"json filter: {exc}") from None
    for char, esc in _JS_ESCAPES.items():
        text = text.replace(char, esc)
    return text


def rendered_content_type(key: str) -> str:
    """The Content-Type of a rendered file: from its extension, with ``charset=utf-8`` for text."""
    ctype = guess_content_type(key)
    return ctype + "; charset=utf-8" if ctype.startswith(_TEXTUAL) else ctype


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, str | bytes | list | tuple) else None


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox with bounded ``*`` and ``**``."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: jinja2.runtime.Context, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "*":
            for seq, times in ((left, right), (right, left)):
                size = _sized(seq)
                if size is not None and isinstance(times, int) and size * times > MAX_PRODUCT_LEN:
                    raise SecurityError(
                        f"'*' would build a value of {size * times} items (limit {MAX_PRODUCT_LEN})"
                    )
            return operator.mul(left, right)
        if operator_ == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"'**' exponent {right} is too large (limit {MAX_EXPONENT})")
            return operator.pow(left, right)
        return super().call_binop(context, operator_, left, right)


def make_environment() -> jinja2.Environment:
    env = _Environment(
        loader=None,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        auto_reload=False,
        cache_size=0,
    )
    env.filters["json"] = json_literal
    return env


def _template_line(exc: BaseException) -> int | None:
    """The template line an exception was raised on (Jinja maps its frames to template lines)."""
    line = getattr(exc, "lineno", None)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line if isinstance(line, int) else None


def _describe(exc: BaseException, key: str) -> str:
    line = _template_line(exc)
    where = f"{key}, line {line}" if line else key
    if isinstance(exc, SecurityError):
        return f"template {where}: not allowed by the sandbox: {exc}"
    if isinstance(exc, jinja2.UndefinedError):
        return f"template {where}: {exc.message}"
    if isinstance(exc, jinja2.TemplateNotFound) or (isinstance(exc, TypeError) and "no loader" in str(exc)):
        return f"template {where}: templates cannot include, import or extend other files"
    if isinstance(exc, RecursionError):
        return f"template {where}: recursion too deep"
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"template {where}: syntax error: {exc.message}"
    if isinstance(exc, jinja2.TemplateError):
        return f"template {where}: {exc.message or exc}"
    return f"template {where}: {type(exc).__name__}: {exc}"


@dataclass(frozen=True, slots=True)
class Rendered:
    key: str
    body: bytes
    content_type: str


class Templates:
    """The build's template files, compiled once; :meth:`render` per customer."""

    def __init__(
        self,
        sources: Mapping[str, bytes],
        *,
        release_name: str,
        source_url: str,
        timeout_seconds: float = TEMPLATE_TIMEOUT_SECONDS,
    ) -> None:
        self._env = make_environment()
        #: CPU seconds one file may take to render for one customer
        self.timeout_seconds = timeout_seconds
        self._release = {"name": release_name, "source": source_url}
        self._compiled: dict[str, jinja2.Template] = {}
        #: template key -> why it cannot be used (every customer rendering it fails with this)
        self.errors: dict[str, str] = {}
        for key, data in sources.items():
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.errors[key] = f"template {key}: not UTF-8 text (byte {exc.start})"
                continue
            try:
                self._compiled[key] = self._env.from_string(text)
            except jinja2.TemplateSyntaxError as exc:
                self.errors[key] = _describe(exc, key)

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self._compiled) | frozenset(self.errors)

    def context(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {**record, "customer": dict(record), "release": dict(self._release)}

    def render(self, key: str, record: Mapping[str, Any]) -> Rendered:
        """Render ``key`` for one customer; RenderError with a clear reason on any failure."""
        if key in self.errors:
            raise RenderError(self.errors[key])
        template = self._compiled[key]
        try:
            context = template.new_context(self.context(record))
            parts = _run(template, context, self.timeout_seconds)
        except _OutputTooLarge:
            raise RenderError(f"template {key}: output larger than {MAX_OUTPUT_BYTES} bytes") from None
        except _Stopped as stop:
            where = f"{key}, line {template.get_corresponding_lineno(stop.python_line)}"
            if stop.why == "timeout":
                raise RenderError(
                    f"template {where}: rendering took longer than {self.timeout_seconds:g} s"
                    " of CPU time (a loop without end?)"
                ) from None
            raise RenderError(f"template {where}: recursion too deep") from None
        except Exception:  # anything a template raises is this customer's failure, not a crash
            raise RenderError(_describe(_with_template_lines(template), key)) from None
        try:
            body = "".join(parts).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RenderError(f"template {key}: output is not valid Unicode ({exc.reason})") from None
        if len(body) > MAX_OUTPUT_BYTES:
            raise RenderError(f"template {key}: output larger than {MAX_OUTPUT_BYTES} bytes")
        return Rendered(key, body, rendered_content_type(key))


class _OutputTooLarge(Exception):
    pass


def _run(template: jinja2.Template, context: jinja2.runtime.Context, seconds: float) -> list[str]:
    """The template's output chunks (what ``Template.generate`` yields), under :class:`_Limits`.

    Only the template's own code runs traced (building the context and rewriting a traceback
    happen outside, in :meth:`Templates.render`): tracing slows down everything the thread runs.
    """
    parts: list[str] = []
    size = 0
    limits = _Limits(seconds)
    chunks = cast(Generator[str, None, None], template.root_render_func(context))
    previous = sys.gettrace()
    sys.settrace(limits.trace)
    try:
        try:
            for chunk in chunks:
                size += len(chunk)
                if size > MAX_OUTPUT_BYTES:
                    raise _OutputTooLarge
                parts.append(chunk)
        finally:
            chunks.close()  # no template frame outlives the limits
    finally:
        sys.settrace(previous)
    return parts


def _with_template_lines(template: jinja2.Template) -> BaseException:
    """The exception being handled, through Jinja's traceback rewrite (its frames carry template lines)."""
    try:
        template.environment.handle_exception()  # always raises
    except BaseException as rewritten:
        return rewritten
