"""Wall seconds, CPU seconds and load average of one measured span, for benchmarks on a shared machine
where wall time is noisy. Standard library only and no ``__future__`` import: the peer benchmarks inline
this file into worker scripts that run in a peer's virtualenv."""

import os
import resource
import time


def _cpu_seconds() -> float:
    """User + system seconds of this process (all its threads) and of the children it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Span:
    """``with Span() as span: ...`` then ``span.record()``: wall_s, cpu_s and the 1-minute load average
    at the start and the end (the machine's load while the span ran, other jobs included)."""

    def __enter__(self) -> "Span":
        self.load_start = os.getloadavg()[0]
        self.cpu_start = _cpu_seconds()
        self.wall_start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s = time.perf_counter() - self.wall_start
        self.cpu_s = _cpu_seconds() - self.cpu_start
        self.load_end = os.getloadavg()[0]

    def record(self) -> dict:
        return {"wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 3),
                "load": [round(self.load_start, 2), round(self.load_end, 2)]}
