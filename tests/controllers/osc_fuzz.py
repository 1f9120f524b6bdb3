"""Hostile OSC datagrams for the fuzz tests (in process and against a live daemon)."""

from __future__ import annotations

import math
import random
import struct
import time

from pythonosc.osc_message_builder import OscMessageBuilder

EXTREMES = [
    (math.nan, "f"), (math.inf, "f"), (-math.inf, "f"), (3.4e38, "f"), (-0.0, "f"),
    (math.nan, "d"), (math.inf, "d"), (-math.inf, "d"), (1e308, "d"), (5e-324, "d"),
    (2**31 - 1, "i"), (-(2**31), "i"), (2**63 - 1, "h"), (-(2**63), "h"),
    ("", "s"), ("x" * 300, "s"), ("studio", "s"), (True, "T"), (False, "F"),
]  # fmt: skip


def message(address: str, args=()) -> bytes:
    builder = OscMessageBuilder(address)
    for value, tag in args:
        builder.add_arg(value, tag)
    return builder.build().dgram


def bundle(elements: list[bytes], tag: int = 1) -> bytes:
    out = b"#bundle\0" + struct.pack(">Q", tag)
    for element in elements:
        out += struct.pack(">i", len(element)) + element
    return out


def nested(inner: bytes, levels: int) -> bytes:
    """``inner`` in ``levels`` bundles, each the only element of the next (at most ~60 KB),
    written in one pass: the n-level bundle is 20 bytes (header, time tag, size) longer than
    the (n-1)-level one."""
    levels = min(levels, (60_000 - len(inner)) // 20)
    out = bytearray()
    for level in range(levels, 0, -1):
        out += (
            b"#bundle\0" + struct.pack(">Q", 1) + struct.pack(">i", 20 * (level - 1) + len(inner))
        )
    return bytes(out + inner)


class Fuzzer:
    """Seeded hostile datagrams over the registry's addresses."""

    def __init__(self, seed: int, addresses: list[str]):
        self.rng = random.Random(seed)
        self.addresses = addresses
        self.kinds = [
            self.random_bytes, self.mutated, self.mutated, self.extreme, self.extreme,
            self.extreme, self.wildcards, self.wildcards, self.deep_bundle, self.broken_bundle,
            self.bundle_of_many,
        ]  # fmt: skip

    def datagram(self, big: bool = False) -> bytes:
        if big:
            return self.near_64k()
        return self.rng.choice(self.kinds)()

    def random_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.randrange(1, 200))

    def valid(self) -> bytes:
        args = [self.rng.choice(EXTREMES) for _ in range(self.rng.randrange(0, 3))]
        return message(self.rng.choice(self.addresses), args)

    def mutated(self) -> bytes:
        data = bytearray(self.valid() if self.rng.random() < 0.8 else self.deep_bundle())
        for _ in range(self.rng.randrange(1, 6)):
            i = self.rng.randrange(len(data))
            action = self.rng.randrange(3)
            if action == 0:
                data[i] = self.rng.randrange(256)
            elif action == 1:
                del data[i]
            else:
                data.insert(i, self.rng.choice([0, 0x2C, 0x2F, 0x2A, 0x23, 0xFF]))
        return bytes(data)

    def extreme(self) -> bytes:
        return message(self.rng.choice(self.addresses), [self.rng.choice(EXTREMES)])

    def wildcards(self) -> bytes:
        pieces = ["*", "?", "[a-z]", "[!0-9]", "{ch,master,x}", "*x", "/", "ch", "1", "{,}"]
        n = self.rng.choice([8, 24, 64, 256, 600])
        pattern = "/" + "".join(self.rng.choice(pieces) for _ in range(n))
        args = [self.rng.choice(EXTREMES)] if self.rng.random() < 0.5 else []
        return message(pattern, args)

    def deep_bundle(self) -> bytes:
        return nested(self.valid(), self.rng.choice([1, 2, 8, 9, 50, 3000]))

    def broken_bundle(self) -> bytes:
        size = self.rng.choice([-4, -1, -(2**31), 2**31 - 1, 3, 1000])
        return b"#bundle\0" + struct.pack(">Q", 1) + struct.pack(">i", size) + b"/x\0\0,\0\0\0"

    def bundle_of_many(self) -> bytes:
        future = (2_208_988_800 + int(time.time()) + self.rng.choice([-10, 1, 100])) << 32
        tag = self.rng.choice([1, future])
        return bundle([self.valid() for _ in range(self.rng.randrange(2, 40))], tag)

    def near_64k(self) -> bytes:
        element = self.rng.choice([self.wildcards(), self.extreme(), message("/*/*/*")])
        count = 60_000 // (len(element) + 4)
        return bundle([element] * count)[:65_000]
