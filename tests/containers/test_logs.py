"""Reading a container's log: bounded, stdout and stderr apart (no Docker needed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from containers.engine import read_log


class FakeStream:
    """What ``APIClient.logs(stream=True)`` returns: frames of one stream, then close()."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.read = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for f in self.frames:
            self.read += 1
            yield f

    def close(self) -> None:
        self.closed = True


class FakeAPI:
    def __init__(self, stdout: list[bytes], stderr: list[bytes]) -> None:
        self.streams = {False: FakeStream(stdout), True: FakeStream(stderr)}
        self.calls: list[dict[str, Any]] = []

    def logs(self, container: str, **kw: Any) -> FakeStream:
        self.calls.append(kw)
        assert kw["stdout"] != kw["stderr"]  # one stream per call: never mixed
        assert kw["stream"] and not kw["follow"]
        return self.streams[kw["stderr"]]


def test_reading_stops_just_past_the_limit() -> None:
    api = FakeAPI([b"x" * 1000] * 1000, [b"oops\n"])
    out, truncated = read_log(api, "c1", stderr=False, limit=2500)
    assert (out, truncated) == (b"x" * 2500, True)
    assert api.streams[False].read == 3  # the 997 frames after the limit were never read
    assert api.streams[False].closed
    assert read_log(api, "c1", stderr=True, limit=2500) == (b"oops\n", False)


def test_a_log_of_exactly_the_limit_is_not_truncated() -> None:
    api = FakeAPI([b"ab", b"cd"], [])
    assert read_log(api, "c1", stderr=False, limit=4) == (b"abcd", False)
    assert read_log(api, "c1", stderr=True, limit=4) == (b"", False)
    assert api.streams[True].closed
