"""A JSON array of objects read element by element, as its bytes arrive.

The company and security lists are single answers that grow with the exchange (6.5 MB and
2 MB of JSON at 20,000 securities); decoded whole they took about 30 MB. `ObjectArray`
finds where each top-level element ends, so each can be decoded and let go on its own: what
stays in memory is one chunk and at most one element.

It checks the array's framing (the brackets, one comma between elements, objects only);
each element's own syntax is checked by whoever decodes it.
"""

from __future__ import annotations

import re

# Inside an element: everything up to the next bracket outside a string (strings whole,
# escapes included), in one match; what stops it is a bracket, a string the piece cuts off,
# or the piece's end. One Python step per bracket, not per string.
_UP_TO_BRACKET = re.compile(rb'(?:[^"\[\]{}]++|"(?:[^"\\]++|\\.)*+")*+', re.DOTALL)
_SPACE = b" \t\r\n"


class NotAnArrayOfObjects(ValueError):
    """The bytes are not a JSON array whose elements are all objects."""


class ObjectArray:
    """Feed it the bytes of a JSON array of objects in any pieces; it returns the complete
    elements (each an object's bytes) as soon as they end. `close()` checks the array ended."""

    def __init__(self) -> None:
        self._buffer = b""  # bytes not yet returned: the current element, then unscanned ones
        self._scan = 0  # where scanning resumes in `_buffer`
        self._depth = 0  # brackets open, the array's own included
        self._element = -1  # where the current element starts in `_buffer`, or -1
        self._opened = False
        self._ended = False
        self._comma_due = False  # an element just ended: a comma or `]` comes next
        self._elements = 0

    def feed(self, data: bytes) -> list[bytes]:
        """The elements that `data` completes, in order."""
        buffer = self._buffer + data if self._buffer else data
        position = self._scan
        elements: list[bytes] = []
        while not self._ended:
            if self._depth <= 1:
                position, ready = self._frame(buffer, position)
                if not ready:
                    break
                continue
            position = _UP_TO_BRACKET.match(buffer, position).end()  # type: ignore[union-attr]
            byte = buffer[position : position + 1]
            if byte in (b"", b'"'):
                break  # the piece ends, perhaps inside a string: wait for the next one
            position += 1
            if byte in (b"{", b"["):
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 1:
                    elements.append(buffer[self._element : position])
                    self._element = -1
                    self._comma_due = True
                    self._elements += 1
        if self._ended and buffer[position:].strip(_SPACE):
            raise NotAnArrayOfObjects("data after the end of the array")
        keep = self._element if self._element >= 0 else position
        self._buffer = buffer[keep:]
        self._scan = position - keep
        if self._element >= 0:
            self._element = 0
        return elements

    def _frame(self, buffer: bytes, position: int) -> tuple[int, bool]:
        """Outside any element: past spaces to the next bracket or comma of the array itself.
        Returns where scanning goes on, and False if more bytes are needed first."""
        position = _skip_space(buffer, position)
        if position == len(buffer):
            return position, False
        byte = buffer[position : position + 1]
        if not self._opened:
            if byte != b"[":
                raise NotAnArrayOfObjects("expected a JSON array")
            self._opened, self._depth = True, 1
        elif byte == b"]" and (self._comma_due or not self._elements):
            self._ended, self._depth = True, 0
        elif byte == b"," and self._comma_due:
            self._comma_due = False
        elif byte == b"{" and not self._comma_due:
            self._element, self._depth = position, 2
        else:
            raise NotAnArrayOfObjects("expected an array of objects")
        return position + 1, True

    def close(self) -> None:
        """Raise `NotAnArrayOfObjects` unless the whole array has been fed."""
        if not self._ended:
            raise NotAnArrayOfObjects("the array ends early" if self._opened else "no JSON array")


def _skip_space(buffer: bytes, position: int) -> int:
    end = len(buffer)
    while position < end and buffer[position] in _SPACE:
        position += 1
    return position
