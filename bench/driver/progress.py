"""Progress lines with the time since the driver started."""

import sys
import time

_START = time.monotonic()


def say(line: str) -> None:
    elapsed = time.monotonic() - _START
    print(f"[{int(elapsed // 60):02d}:{elapsed % 60:04.1f}] {line}", flush=True)


def elapsed() -> float:
    return time.monotonic() - _START


def warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
