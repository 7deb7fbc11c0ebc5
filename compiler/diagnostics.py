"""Diagnostics: the one error type of the front end, and its rendering with a caret.

Every pass reports problems as ``Diagnostic`` values; a pass that cannot go on
raises ``CompileError`` holding all diagnostics collected so far. Nothing else
may escape the front end for any input text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from tritondsl.compiler.nodes import Span


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One located problem: ``path:line:col: error: message`` plus optional help and notes."""

    message: str
    span: Span | None
    severity: str = "error"
    help: str | None = None
    notes: tuple[tuple[str, Span | None], ...] = ()

    def render(self, path: str, source: str | None) -> str:
        """Format as ``path:line:col: severity: message`` with the source line and a caret."""
        return _render(path, source, self.span, self.severity, self.message, self.help, self.notes)


@dataclass
class CompileError(Exception):
    """Raised by the front end; carries every diagnostic found in the file."""

    diagnostics: list[Diagnostic]
    path: str = "<input>"
    source: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return self.render()

    def render(self) -> str:
        """All diagnostics, rendered, followed by a count."""
        parts = [d.render(self.path, self.source) for d in self.diagnostics]
        errors = sum(d.severity == "error" for d in self.diagnostics)
        parts.append(f"{errors} error{'s' if errors != 1 else ''} in {self.path}")
        return "\n".join(parts)


MAX_ERRORS = 100  # a file with more stops here: every later pass costs time per error


class TooManyErrors(Exception):
    """Raised by a ``Reporter`` at its limit; ``diagnostic`` says so (after the others)."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


class Reporter:
    """Collects diagnostics for one file; passes append to it and go on where they can.

    The same message at the same place is kept once (a block instantiated many times
    fails the same way each time); at ``limit`` different errors it raises TooManyErrors.
    """

    def __init__(self, limit: int = MAX_ERRORS) -> None:
        self.diagnostics: list[Diagnostic] = []
        self.limit = limit
        self._seen: set[tuple[str, Span | None]] = set()

    def error(
        self,
        message: str,
        span: Span | None,
        help: str | None = None,
        notes: Iterable[tuple[str, Span | None]] = (),
    ) -> None:
        """Record an error."""
        if (message, span) in self._seen:
            return
        self._seen.add((message, span))
        self.diagnostics.append(Diagnostic(message, span, "error", help, tuple(notes)))
        if len(self.diagnostics) >= self.limit:
            stop = f"stopped after {self.limit} errors"
            raise TooManyErrors(Diagnostic(stop, None, "note", "fix these and check again"))

    @property
    def has_errors(self) -> bool:
        """True once any error was recorded."""
        return any(d.severity == "error" for d in self.diagnostics)


def printable(text: str) -> str:
    """``text`` safe to print anywhere: control characters and undecodable bytes escaped.

    File names are arbitrary bytes on POSIX; Python hands undecodable ones over as lone
    surrogates, which a UTF-8 terminal refuses, so they are shown as ``\\xNN``.
    """
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif 0xDC80 <= ord(ch) <= 0xDCFF:
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(repr(ch)[1:-1])
    return "".join(out)


def suggest(name: str, candidates: Iterable[str]) -> str | None:
    """A 'did you mean' hint for a misspelt ``name``, or None.

    Only plausible typos count: the same name in another case, a few letters off (one edit
    per four letters, a swap of neighbours is one), or a prefix of four letters or more in
    either direction, in any case (``BatchNorm`` -> ``BatchNorm2d``, ``maxpool`` ->
    ``MaxPool2d``). So ``softmax`` never suggests ``max``, nor ``mean`` ``absmean``."""
    pool = sorted(set(candidates))
    lowered = {c.lower(): c for c in pool}
    if name.lower() in lowered and lowered[name.lower()] != name:
        return f"did you mean '{lowered[name.lower()]}'?"
    allowed = max(1, len(name) // 4)
    scored = []
    for candidate in pool:
        if candidate == name:
            continue
        short, long = sorted((name.lower(), candidate.lower()), key=len)
        if len(short) >= 4 and long.startswith(short):
            scored.append((len(long) - len(short) - 0.5, candidate))
        elif (distance := _edits(name, candidate, allowed)) <= allowed:
            scored.append((distance, candidate))
    return f"did you mean '{min(scored)[1]}'?" if scored else None


def _edits(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment distance of ``a`` and ``b`` (limit + 1 once it exceeds it)."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous, current = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        before, previous, current = previous, current, [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                assert before is not None
                current[j] = min(current[j], before[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
    return current[-1]


def _render(
    path: str,
    source: str | None,
    span: Span | None,
    severity: str,
    message: str,
    help: str | None,
    notes: tuple[tuple[str, Span | None], ...],
) -> str:
    if span is None:
        lines = [f"{path}: {severity}: {message}"]
    else:
        lines = [f"{path}:{span.line}:{span.column}: {severity}: {message}"]
        lines.extend(_excerpt(source, span))
    if help:
        lines.append(f"  = help: {help}")
    for text, note_span in notes:
        where = f"{path}:{note_span.line}:{note_span.column}: " if note_span else ""
        lines.append(f"  = note: {where}{text}")
    return "\n".join(lines)


def _excerpt(source: str | None, span: Span) -> list[str]:
    """The source line of ``span`` with a caret line under it."""
    if source is None:
        return []
    text_lines = source.split("\n")
    if not 1 <= span.line <= len(text_lines):
        return []
    raw = text_lines[span.line - 1].rstrip("\r").expandtabs(1)
    # Control characters would garble the terminal; show them as '?' (same width).
    text = "".join(ch if ch.isprintable() else "?" for ch in raw)
    if len(text) > 200:  # keep huge generated lines readable
        start = max(0, span.column - 80)
        text, offset = text[start : start + 160], start
    else:
        offset = 0
    end = span.end_column if span.end_line == span.line else len(text) + offset + 1
    width = max(1, min(end, len(text) + offset + 1) - span.column)
    gutter = f"{span.line:>5} | "
    caret = " " * (len(gutter) - 2) + "| " + " " * (span.column - 1 - offset) + "^" * width
    return [gutter + text, caret]
