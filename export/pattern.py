"""The seed's layer-pattern notation, parsed: ``INPUT 3x32x32 -> [[CONV3-32 -> RELU]*2 -> POOL2]*2 -> FC10``.

Grammar (keywords case-insensitive, whitespace free, ``→`` and ``×`` accepted for ``->`` and ``x``)::

    pattern  := 'INPUT' INT 'x' INT 'x' INT '->' sequence END
    sequence := element ('->' element)*
    element  := (layer | '[' sequence ']' ('*' INT)?) '?'?
    layer    := 'CONV' INT '-' INT | 'RELU' | 'POOL' INT | 'FC' INT

Text to syntax tree only (no torch: ``--help`` stays instant); :mod:`export.pattern_model` makes layers and a module.
A :class:`PatternError` names what was expected and draws a caret under the column: a one-line pattern's column
number alone is hard to find.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from export.errors import ExportError
from service.config_model import MAX_TENSOR_ELEMENTS

HELP = """\
--pattern: the network in the seed's notation, with the VGG paper's layer names, e.g.
  "INPUT 3x32x32 -> [[CONV3-32 -> RELU]*2 -> POOL2]*2 -> [FC128 -> RELU]*1 -> FC10"

  INPUT CxHxW  first: channels, height and width of one image
  CONVk-n      k×k convolution, n filters, stride 1, zero padding (k−1)/2 (k odd, so the side is kept)
  RELU         rectified linear unit
  POOLk        k×k max pooling, stride k (the side must be a multiple of k)
  FCn          fully connected, n units (flattened before the first); the last layer is an FC: its n is the classes
  A -> B       A, then B (→ works too)
  [ ... ]*N    the group N ≥ 1 times ([ ... ] alone: once)
  X?           optional: X is kept where it tiles its input exactly and skipped (and listed) where it does not,
               e.g. [[CONV3-64 -> RELU]*2 -> POOL2?]*5 halves the side only while it is even
Keywords are case-insensitive; spaces are free. Layers are named as in VGG: conv1_1, relu1_1, pool1, fc3, …
"""

_TOKEN = re.compile(r"(?P<arrow>->|→)|(?P<int>[0-9]+)|(?P<name>[A-Za-z]+)|(?P<punct>[\[\]*?×-])")
_LAYERS = "CONVk-n, RELU, POOLk, FCn"
MAX_NUMBER = 1_000_000  # the largest number a pattern may write: torch would fail to allocate or overflow beyond


class PatternError(ExportError):
    """A pattern that cannot be read or built: the message, then the pattern with a caret under ``column``."""

    def __init__(self, text: str, column: int, message: str) -> None:
        shown = "".join(" " if c.isspace() else c for c in text)  # a tab or newline would shift the caret
        super().__init__("pattern", f"column {column}: {message}\n  {shown}\n  {' ' * (column - 1)}^")
        self.column = column
        self.reason = message


@dataclass(frozen=True)
class Token:
    """One lexeme: ``kind`` is arrow, int, name, x, end or the punctuation itself; ``column`` is 1-based."""

    kind: str
    text: str
    column: int

    @property
    def end(self) -> int:
        """The 0-based index just past the token, to slice an element's source text."""
        return self.column - 1 + len(self.text)

    def found(self) -> str:
        """How an error message names this token."""
        return "end of pattern" if self.kind == "end" else repr(self.text)


@dataclass(frozen=True)
class Layer:
    """One written layer: ``size`` is the kernel side (CONV, POOL), ``units`` the filters or FC units."""

    kind: str  # conv, relu, pool or fc
    size: int
    units: int
    column: int
    source: str  # as written, e.g. "CONV3-32" or "POOL2?"
    optional: bool = False


@dataclass(frozen=True)
class Group:
    """A bracketed sequence repeated ``repeat`` times."""

    items: tuple[Layer | Group, ...]
    repeat: int
    column: int
    source: str
    optional: bool = False


@dataclass(frozen=True)
class Pattern:
    """The parsed pattern: the input volume and the elements after it."""

    text: str
    input_size: tuple[int, int, int]
    body: tuple[Layer | Group, ...]


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens, ending with an ``end`` token one column past the last character."""
    tokens: list[Token] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            tokens.append(Token("end", "", pos + 1))
            return tokens
        match = _TOKEN.match(text, pos)
        if match is None:
            raise PatternError(text, pos + 1, f"unexpected character {text[pos]!r}; layers are {_LAYERS}")
        kind, lexeme = match.lastgroup or "", match.group()
        if kind == "punct" or (kind == "name" and lexeme.upper() == "X"):
            kind = "x" if lexeme in "xX×" else lexeme
        tokens.append(Token(kind, lexeme, pos + 1))
        pos = match.end()


def parse(text: str) -> Pattern:
    """Parse a pattern string.

    Raises:
        PatternError: at the first token that does not fit the grammar, or a number out of range.
    """
    return _Parser(text).pattern()


class _Parser:
    """Recursive descent over the token list, one method per grammar rule."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0
        self.follow: list[str] = []  # what could have continued the element just parsed, for error messages

    def peek(self) -> Token:
        return self.tokens[self.index]

    def next(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def fail(self, token: Token, message: str) -> PatternError:
        return PatternError(self.text, token.column, message)

    def expect(self, kind: str, what: str) -> Token:
        token = self.next()
        if token.kind != kind:
            raise self.fail(token, f"expected {what}, found {token.found()}")
        return token

    def number(self, what: str, where: str) -> int:
        token = self.next()
        if token.kind != "int":
            raise self.fail(token, f"expected {what} {where}, found {token.found()}")
        if not 1 <= int(token.text) <= MAX_NUMBER:
            raise self.fail(token, f"{what} must be 1 to {MAX_NUMBER:,}, found {token.text}")
        return int(token.text)

    def pattern(self) -> Pattern:
        first = self.next()
        if first.kind != "name" or first.text.upper() != "INPUT":
            raise self.fail(first, f"expected 'INPUT CxHxW' first, found {first.found()}")
        sizes = []
        for axis, what in (("C", "channel count C"), ("H", "height H"), ("W", "width W")):
            if axis != "C":
                self.expect("x", f"'x' before {axis} (INPUT CxHxW)")
            sizes.append(self.number(f"the input's {what}", "(INPUT CxHxW)"))
        if (values := sizes[0] * sizes[1] * sizes[2]) > MAX_TENSOR_ELEMENTS:
            limit = f"the service takes at most {MAX_TENSOR_ELEMENTS:,} per row"
            raise self.fail(first, f"INPUT {'x'.join(map(str, sizes))} holds {values:,} values per image; {limit}")
        self.expect("arrow", "'->' after the input size")
        body = self.sequence(None)
        return Pattern(self.text, (sizes[0], sizes[1], sizes[2]), body)

    def sequence(self, opener: Token | None) -> tuple[Layer | Group, ...]:
        items = [self.element()]
        closer = "]" if opener else "end"
        while True:
            token = self.peek()
            if token.kind == "arrow":
                self.next()
                items.append(self.element())
            elif token.kind == closer:
                return tuple(items)
            else:
                options = [*self.follow, "'->'", "']'" if opener else "end of pattern"]
                listed = ", ".join(options[:-1]) + f" or {options[-1]}"
                note = ""
                if opener and token.kind == "end":
                    note = f" (to close the '[' at column {opener.column})"
                elif not opener and token.kind == "]":
                    note = " (no '[' is open)"
                raise self.fail(token, f"expected {listed}, found {token.found()}{note}")

    def element(self) -> Layer | Group:
        token = self.next()
        if token.kind == "[":
            items = self.sequence(token)
            self.next()  # the ']' that sequence() stopped at
            repeat, self.follow = 1, ["'*N'", "'?'"]
            if self.peek().kind == "*":
                self.next()
                repeat, self.follow = self.number("a repeat count", "after '*'"), ["'?'"]
            optional = self._optional()
            return Group(items, repeat, token.column, self._source(token), optional)
        if token.kind != "name":
            raise self.fail(token, f"expected a layer ({_LAYERS}) or '[', found {token.found()}")
        size, units = self.layer_numbers(token)
        self.follow = ["'?'"]
        optional = self._optional()
        return Layer(token.text.lower(), size, units, token.column, self._source(token), optional)

    def layer_numbers(self, token: Token) -> tuple[int, int]:
        """The (size, units) written after a layer keyword; the keyword is lower-cased into the layer's kind."""
        word = token.text.upper()
        if word == "RELU":
            return 0, 0
        if word == "POOL":
            return self.number("a pool size k", "after POOL (POOLk)"), 0
        if word == "FC":
            return 0, self.number("a unit count n", "after FC (FCn)")
        if word != "CONV":
            raise self.fail(token, f"unknown layer {token.text!r}; expected {_LAYERS} or '['")
        kernel_token = self.peek()
        kernel = self.number("a kernel size k", "after CONV (CONVk-n)")
        self.expect("-", "'-' between the kernel size and the filter count (CONVk-n)")  # before judging k: CONV332
        if kernel % 2 == 0:
            raise self.fail(
                kernel_token, f"CONV kernel size must be odd so that padding (k−1)/2 keeps the side, found {kernel}"
            )
        return kernel, self.number("a filter count n", "after '-' (CONVk-n)")

    def _optional(self) -> bool:
        if self.peek().kind != "?":
            return False
        self.next()
        self.follow = []
        return True

    def _source(self, start: Token) -> str:
        """The element's text as written, from its first token to the last one consumed."""
        return self.text[start.column - 1 : self.tokens[self.index - 1].end]
