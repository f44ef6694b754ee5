"""The benchmark's deterministic workload and an independent model of the fold.

The event stream is one sequence, generated from a seed, that is cut into phases: the preloaded
throughput batch, the rate-limited latency batch and the crash batch. Every system under test gets
exactly the same records in the same order, and the model below (written from docs/DESIGN.md, not from
either implementation) predicts every key's final state.
"""

from __future__ import annotations

import json
from array import array
from dataclasses import dataclass, field

MASK64 = (1 << 64) - 1

# Valid event kinds: (value bytes, decoded event) — event is ("hello", message) | ("mood", angry) | ("reset",)
VALID = [
    (b"Hello", ("hello", "Hello")),
    (b'{"type":"hello","message":"Hello"}', ("hello", "Hello")),
    (b"Howdy", ("hello", "Howdy")),
    (b"Hi there", ("hello", "Hi there")),
    (b'{"type":"hello","message":"Hey"}', ("hello", "Hey")),
    (b'{"type":"mood","mood":"ANGRY"}', ("mood", True)),
    (b'{"type":"mood","mood":"HAPPY"}', ("mood", False)),
    (b'{"type":"reset"}', ("reset",)),
]
# Cumulative per-mille thresholds for the valid kinds above: 77% plain Hello, 3% JSON Hello,
# 3% Howdy, 1.5% "Hi there", 0.5% JSON "Hey", 5% ANGRY, 7% HAPPY, 3% reset.
THRESHOLDS = [770, 800, 830, 845, 850, 900, 970, 1000]

# Poison records: (name, key override, value). Key override: "keep" (the event's key), None (null
# key) or bytes. One event in POISON_EVERY is poison, cycling through these kinds.
POISON = [
    ("null_key", None, b"Hello"),
    ("empty_value", "keep", b""),
    ("key_too_large", b"k" * 300, b"Hello"),
    ("invalid_utf8", "keep", b"\xc3\x28"),
    ("malformed_json", "keep", b"{not json"),
    ("unknown_type", "keep", b'{"type":"wave"}'),
    ("unknown_mood", "keep", b'{"type":"mood","mood":"SAD"}'),
    ("invalid_key", b"\xff\xfe", b"Hello"),
    ("invalid_key", b"", b"Hello"),
]
POISON_EVERY = 1000
POISON_BASE = 100  # kind codes >= POISON_BASE are poison


@dataclass
class Workload:
    seed: int
    keys: int
    key_bytes: list[bytes]
    codes: array = field(default_factory=lambda: array("B"))  # kind code per event
    key_index: array = field(default_factory=lambda: array("l"))  # key index per event

    def __len__(self) -> int:
        return len(self.codes)

    def record(self, i: int) -> tuple[bytes | None, bytes]:
        """The (key, value) of event i as produced to the input topic."""
        code = self.codes[i]
        key = self.key_bytes[self.key_index[i]]
        if code >= POISON_BASE:
            _, override, value = POISON[code - POISON_BASE]
            return (key if override == "keep" else override), value
        return key, VALID[code][0]

    def valid_in(self, start: int, end: int) -> int:
        return sum(1 for i in range(start, end) if self.codes[i] < POISON_BASE)


def generate(events: int, keys: int, seed: int = 20240611) -> Workload:
    """`events` events over `keys` keys (user-0 .. user-{keys-1}), deterministic in the seed."""
    x = (seed * 0x9E3779B97F4A7C15 + 1) & MASK64 or 1
    w = Workload(seed=seed, keys=keys, key_bytes=[b"user-%d" % k for k in range(keys)])
    codes, key_index = w.codes, w.key_index
    thresholds = THRESHOLDS
    for i in range(events):
        # xorshift64*, two draws per event: the key and the kind.
        x ^= x >> 12
        x ^= (x << 25) & MASK64
        x ^= x >> 27
        k = ((x * 0x2545F4914F6CDD1D) & MASK64) >> 11
        x ^= x >> 12
        x ^= (x << 25) & MASK64
        x ^= x >> 27
        r = (((x * 0x2545F4914F6CDD1D) & MASK64) >> 11) % 1000
        key_index.append(k % keys)
        if i % POISON_EVERY == POISON_EVERY // 2:
            codes.append(POISON_BASE + (i // POISON_EVERY) % len(POISON))
            continue
        code = 0
        while r >= thresholds[code]:
            code += 1
        codes.append(code)
    return w


@dataclass
class KeyState:
    count: int = 0
    total: int = 0
    angry: bool = False
    revision: int = 0
    outcome: str = ""


def model(w: Workload, end: int | None = None) -> dict[str, KeyState]:
    """Final state of every key after events [0, end), by the fold in docs/DESIGN.md."""
    end = len(w) if end is None else end
    states: dict[str, KeyState] = {}
    names = [k.decode() for k in w.key_bytes]
    for i in range(end):
        code = w.codes[i]
        if code >= POISON_BASE:
            continue  # poison changes no state
        s = states.get(names[w.key_index[i]])
        if s is None:
            s = states[names[w.key_index[i]]] = KeyState()
        event = VALID[code][1]
        if event[0] == "hello":
            if s.angry:
                s.outcome = "refused"
            elif event[1] == "Hello":
                s.count += 1
                s.total += 1
                s.outcome = "counted"
            else:
                s.outcome = "ignored"
        elif event[0] == "mood":
            s.angry = event[1]
            s.outcome = "mood"
        else:
            s.count = 0
            s.outcome = "reset"
        s.revision += 1
    return states


def compare(expected: dict[str, KeyState], last: dict[bytes, bytes], limit: int = 10) -> list[str]:
    """Differences between the model and the last output record per key (empty: all equal)."""
    problems: list[str] = []
    for name, want in expected.items():
        raw = last.get(name.encode())
        if raw is None:
            problems.append(f"{name}: no output record")
        else:
            got = json.loads(raw)
            mood = "ANGRY" if want.angry else "HAPPY"
            wanted = {"key": name, "helloCount": want.count, "helloTotalCount": want.total, "mood": mood,
                      "revision": want.revision, "outcome": want.outcome}
            diff = {f: (got.get(f), v) for f, v in wanted.items() if got.get(f) != v}
            if diff:
                problems.append(f"{name}: " + ", ".join(f"{f} is {g!r}, expected {v!r}" for f, (g, v) in diff.items()))
        if len(problems) >= limit:
            return problems
    extra = [k for k in last if k.decode(errors="replace") not in expected]
    if extra:
        problems.append(f"{len(extra)} keys in the output that the workload never sent a valid event for, e.g. {extra[0]!r}")
    return problems
