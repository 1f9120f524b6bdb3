"""OSC 1.0 address patterns, matched in time linear in the pattern's length.

OSC 1.0 spec, "OSC Message Dispatching and Pattern Matching": ``?`` one character, ``*`` any
run of characters, ``[abc]``/``[a-z]``/``[!abc]`` one of / none of, ``{foo,bar}`` one of the
strings; none of them matches ``/``. The semantics are python-osc's dispatcher's (tested
against it), with two deliberate differences: a negated class never matches ``/`` (the spec
says so; python-osc's ``[!a]`` does), and a pattern python-osc would silently match nothing
with (an unclosed ``[``, ``/`` inside ``[]`` or ``{}``) is refused here with a reason.

Why not a regex. Translating ``*`` into ``[^/]*`` hands the pattern to a backtracking
engine: ``/************************x`` against every registry address costs time exponential
in the number of stars (one 32-byte datagram stalled the daemon for 10 s). Here a pattern is
split into path segments once; each segment is a list of tokens run as a set of positions
(a Thompson-style simulation: the state after each token is the set of name positions it can
end at, kept as the bits of one int), so one segment against one name costs
O(tokens x name length) without any backtracking. Registry addresses are kept as a tree of
segments, so literal segments are dictionary look-ups and a segment pattern is matched once
per distinct name at its level, not once per address.

Work is counted in ``steps`` (one step: one token advanced over one name). The caller passes
a :class:`WorkBudget`; a pattern that would exceed it raises :class:`PatternTooComplex`, so
the work one datagram may cause has a hard bound whatever the pattern.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

# A registry address is at most a few dozen characters; a pattern 16 times longer than the
# longest legitimate one is not a pattern but an attack.
MAX_PATTERN_LENGTH = 512
_PATTERN_CHARS = frozenset("?*[]{}")

_STAR, _ONE, _LITERAL, _CLASS, _ALTERNATION = range(5)


class PatternTooComplex(Exception):
    """Matching a pattern would exceed the work budget of its datagram."""


@dataclass
class WorkBudget:
    """Steps of pattern matching one datagram may still spend (see the module docstring)."""

    steps: int

    def spend(self, steps: int) -> None:
        self.steps -= steps
        if self.steps < 0:
            raise PatternTooComplex("pattern matching exceeds the work limit of one packet")


def is_pattern(address: str) -> bool:
    """Whether an address contains OSC pattern characters."""
    return not _PATTERN_CHARS.isdisjoint(address)


@dataclass(frozen=True)
class _Segment:
    """One path segment of a pattern: tokens, or ``literal`` when it has no wildcard."""

    literal: str | None
    tokens: tuple[tuple[int, object], ...] = ()
    min_length: int = 0
    cost: int = 1  # steps per name position

    def positions(self, name: str, budget: WorkBudget) -> bool:
        """Whether the segment matches all of ``name`` (a segment of a registry address)."""
        m = len(name)
        if m < self.min_length:
            return False
        budget.spend(self.cost * (m + 1))
        full = (1 << (m + 1)) - 1
        reach = 1  # bit p set: the tokens so far can end at name position p
        for kind, data in self.tokens:
            if kind == _STAR:
                lowest = reach & -reach
                reach = full & ~(lowest - 1)
            elif kind == _ONE:
                reach = (reach << 1) & full & ~1
            elif kind == _LITERAL:
                reach = _advance(reach, name, data) & full
            elif kind == _CLASS:
                negate, chars, ranges = data
                mask = 0
                for p, ch in enumerate(name):
                    inside = ch in chars or any(lo <= ch <= hi for lo, hi in ranges)
                    if inside != negate:
                        mask |= 1 << p
                reach = (reach & mask) << 1
            else:  # _ALTERNATION
                out = 0
                for word in data:
                    out |= _advance(reach, name, word)
                reach = out & full
            if not reach:
                return False
        return bool(reach >> m & 1)


def _advance(reach: int, name: str, word: str) -> int:
    """Positions after ``word`` read from any position in ``reach``."""
    if not word:
        return reach
    out, start = 0, name.find(word)
    while start >= 0:
        if reach >> start & 1:
            out |= 1 << (start + len(word))
        start = name.find(word, start + 1)
    return out


def _parse_class(body: str, pattern: str) -> tuple[bool, frozenset[str], tuple]:
    """``[...]`` as (negate, single characters, (low, high) ranges); ranges stay pairs, so
    ``[\x00-\uffff]`` costs nothing to parse."""
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    if not body:
        raise ValueError(f"empty '[]' in {pattern!r}")
    chars: set[str] = set()
    ranges: list[tuple[str, str]] = []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            low, high = body[i], body[i + 2]
            if low > high:
                raise ValueError(f"bad range {low}-{high} in {pattern!r}")
            ranges.append((low, high))
            i += 3
        else:
            chars.add(body[i])
            i += 1
    return negate, frozenset(chars), tuple(ranges)


def _parse_segment(text: str, pattern: str) -> _Segment:
    if not is_pattern(text):
        return _Segment(literal=text)
    tokens: list[tuple[int, object]] = []
    min_length, cost, i, n = 0, 0, 0, len(text)
    literal: list[str] = []

    def flush() -> None:
        if literal:
            tokens.append((_LITERAL, "".join(literal)))
            literal.clear()

    while i < n:
        c = text[i]
        if c in "?*[{":
            flush()
        if c == "*":
            if not tokens or tokens[-1][0] != _STAR:  # "**" is "*"
                tokens.append((_STAR, None))
        elif c == "?":
            tokens.append((_ONE, None))
            min_length += 1
        elif c in "[{":
            close = "]" if c == "[" else "}"
            end = text.find(close, i + 1)
            if end < 0:
                raise ValueError(f"unclosed {c!r} in {pattern!r}")
            body = text[i + 1 : end]
            if c == "[":
                negate, chars, ranges = _parse_class(body, pattern)
                tokens.append((_CLASS, (negate, chars, ranges)))
                min_length += 1
                cost += len(ranges)
            else:
                if "{" in body:
                    raise ValueError(f"nested '{{' in {pattern!r}")
                words = tuple(dict.fromkeys(body.split(",")))  # once each, in order
                tokens.append((_ALTERNATION, words))
                min_length += min(len(w) for w in words)
                cost += len(words) - 1
            i = end
        elif c in "]}":
            raise ValueError(f"unbalanced {c!r} in {pattern!r}")
        else:
            literal.append(c)
            min_length += 1
        i += 1
    flush()
    return _Segment(None, tuple(tokens), min_length, cost + len(tokens))


@dataclass(frozen=True)
class AddressPattern:
    """A parsed OSC address pattern (ValueError when malformed or too long)."""

    text: str
    segments: tuple[_Segment, ...]

    @classmethod
    def parse(cls, pattern: str, budget: WorkBudget | None = None) -> AddressPattern:
        """Parse (cached: a surface repeats its patterns); parsing costs one step a
        character of ``budget``."""
        if budget is not None:
            budget.spend(len(pattern))
        return _parse(pattern)

    @classmethod
    def _parse(cls, pattern: str) -> AddressPattern:
        if len(pattern) > MAX_PATTERN_LENGTH:
            raise ValueError(f"pattern longer than {MAX_PATTERN_LENGTH} characters")
        if not pattern.startswith("/"):
            raise ValueError(f"pattern {pattern!r} does not start with '/'")
        # "/" inside [] or {} would cross segments, which the spec's wildcards never do
        i = 0
        while i < len(pattern):
            c = pattern[i]
            if c in "[{":
                end = pattern.find("]" if c == "[" else "}", i + 1)
                if end < 0:
                    raise ValueError(f"unclosed {c!r} in {pattern!r}")
                if "/" in pattern[i + 1 : end]:
                    raise ValueError(f"'/' inside [] or {{}} in {pattern!r}")
                i = end
            i += 1
        parts = pattern[1:].split("/")
        return cls(pattern, tuple(_parse_segment(p, pattern) for p in parts))

    def matches(self, address: str, budget: WorkBudget | None = None) -> bool:
        """Whether one address matches (for a single check; see AddressTree for many)."""
        budget = budget if budget is not None else WorkBudget(1 << 62)
        parts = address[1:].split("/") if address.startswith("/") else None
        if parts is None or len(parts) != len(self.segments):
            return False
        for segment, name in zip(self.segments, parts, strict=True):
            if segment.literal is not None:
                if segment.literal != name:
                    return False
            elif not segment.positions(name, budget):
                return False
        return True


@lru_cache(maxsize=256)
def _parse(pattern: str) -> AddressPattern:
    return AddressPattern._parse(pattern)


@dataclass
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    address: str | None = None


class AddressTree:
    """A set of addresses (the registry's) as a tree of path segments, for pattern matching."""

    def __init__(self, addresses: Iterable[str]):
        self._root = _Node()
        self.size = 0
        for address in addresses:
            node = self._root
            for part in address[1:].split("/"):
                node = node.children.setdefault(part, _Node())
            node.address = address
            self.size += 1

    def match(self, pattern: AddressPattern, budget: WorkBudget, limit: int) -> list[str]:
        """Addresses matching ``pattern`` in insertion order of the tree (at most ``limit``).

        Raises PatternTooComplex when the budget runs out."""
        frontier = [self._root]
        for segment in pattern.segments:
            budget.spend(len(frontier))
            if segment.literal is not None:
                frontier = [
                    child
                    for node in frontier
                    if (child := node.children.get(segment.literal)) is not None
                ]
            else:
                verdicts: dict[str, bool] = {}  # a name repeats under every channel: once
                next_frontier = []
                for node in frontier:
                    budget.spend(len(node.children))
                    for name, child in node.children.items():
                        ok = verdicts.get(name)
                        if ok is None:
                            ok = verdicts[name] = segment.positions(name, budget)
                        if ok:
                            next_frontier.append(child)
                frontier = next_frontier
            if not frontier:
                return []
        out = [node.address for node in frontier if node.address is not None]
        return out[:limit]
