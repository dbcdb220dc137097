"""``bench/nixl_edge.py --profile``: where one send of ours spends its time, phase by phase.

The sender's NIXL calls and slot lease are wrapped with time stamps
(``instrument``); per case, the medians of the phases between them are printed
with raw NIXL's variants, and for the first case a cProfile of a stream of sends.
Always on, with or without ``--profile``: what each send spent leasing slots
and registering (``LeaseMeter``: NIXL requests made, memory registered).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.nixl_edge_baselines import ROTATE_SLOTS
from nodes.transport import TensorSender
from nodes.transport import memory as edge_memory

PREPARED = [0]  # NIXL transfer requests our sender created (the rest were re-posts)
_describe = edge_memory.describe  # before ``instrument`` wraps it
LIMIT_S = 1e-3  # issue 22: after the first contact no send spends more than this leasing or registering


class LeaseMeter:
    """Seconds one send of ours spent leasing slots (``SlotClient.lease``, credits awaited
    included) and registering (NIXL transfer requests made, memory registered).

    A send that reuses its slot and prepared WRITE calls none of them: costs nothing then.
    """

    def __init__(self, tx: TensorSender) -> None:
        self.spent: dict[str, float] = {}
        slots, agent = tx._slots, tx._agent
        slots.lease = self._timed(slots.lease, "lease")
        agent._prepare = self._timed(agent._prepare, "make")
        agent.register = self._timed(agent.register, "register")

    def _timed(self, call: Any, part: str) -> Any:
        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return call(*a, **k)
            finally:
                self.spent[part] = self.spent.get(part, 0.0) + time.perf_counter() - t0

        return timed

    def take(self) -> dict[str, float]:
        """Seconds spent since the last ``take``, by part: lease, make (NIXL requests), register."""
        spent, self.spent = self.spent, {}
        return spent


def lease_report(text: str, spent: dict[str, list[dict[str, float]]]) -> str:
    """One case's line: the most one send of each path spent leasing and registering, and on what."""

    def most(sends: list[dict[str, float]]) -> str:
        worst = max(sends, key=lambda parts: sum(parts.values()))
        what = f" ({', '.join(f'{k} {v * 1e6:.0f}' for k, v in worst.items())})" if worst else ""
        return f"{sum(worst.values()) * 1e6:.0f}{what}"

    cols = ", ".join(f"{kind} {most(s)}" for kind, s in spent.items() if s)
    over = sum(sum(x.values()) > LIMIT_S for s in spent.values() for x in s)
    sends = sum(len(s) for s in spent.values())
    flag = f"{over} OVER {LIMIT_S * 1e3:.0f} ms" if over else f"none over {LIMIT_S * 1e3:.0f} ms"
    return f"lease+register {text} (us, most of one send): {cols}; {sends} timed sends, {flag}"


def instrument(tx: TensorSender) -> dict[str, float]:
    """Time stamps of one send's phases: slot taken, write called, NIXL post, NIXL done (``--profile``)."""
    marks: dict[str, float] = {}
    slots, core = tx._slots, tx._agent._calls
    lease, start, state = slots.lease, core.start, core.state
    write, post = tx._agent.write, tx._agent.post

    def timed_describe(*a: Any, **k: Any) -> Any:
        got = describe(*a, **k)
        marks["described"] = time.perf_counter()
        return got

    def timed_lease(*a: Any, **k: Any) -> Any:
        marks["lease"] = time.perf_counter()
        got = lease(*a, **k)
        marks["slot"] = time.perf_counter()
        return got

    def timed(call: Any) -> Any:
        def timed_call(*a: Any, **k: Any) -> Any:
            marks["write"] = time.perf_counter()
            got = call(*a, **k)
            marks["written"] = time.perf_counter()
            return got

        return timed_call

    def counted_prepare(*a: Any, **k: Any) -> Any:
        PREPARED[0] += 1
        return prepare(*a, **k)

    prepare = tx._agent._prepare
    tx._agent._prepare = counted_prepare

    def timed_start(handle: Any, notif: bytes) -> Any:
        marks["post"] = time.perf_counter()
        status = start(handle, notif)
        if status != core.in_prog:
            marks["done"] = time.perf_counter()
        return status

    def timed_state(handle: Any) -> Any:
        status = state(handle)
        if status != core.in_prog:
            marks["done"] = time.perf_counter()
        return status

    def timed_meanwhile() -> None:
        meanwhile()
        marks["meanwhile"] = time.perf_counter()

    meanwhile = tx._fast._while_in_flight
    tx._fast._while_in_flight = timed_meanwhile
    slots.lease, core.start, core.state = timed_lease, timed_start, timed_state
    tx._agent.write, tx._agent.post = timed(write), timed(post)
    describe = edge_memory.describe
    edge_memory.describe = timed_describe
    return marks


def profile_calls(send: Any, count: int = 300, kind: str = "ours", array: Any = None) -> None:
    """Where a stream of our sends spends its time, by function (``--profile``: the first case,
    and block cases); with ``array``, what describing it costs."""
    import cProfile
    import io
    import pstats
    import timeit

    us = {
        "tuple(range(8))": timeit.timeit(lambda: tuple(range(8)), number=100000) * 10,
        "time.monotonic()": timeit.timeit(time.monotonic, number=100000) * 10,
        "time.perf_counter()": timeit.timeit(time.perf_counter, number=100000) * 10,
    }
    if array is not None:  # a send([array]) looks at it each time: which look costs what
        us["describe(array)"] = timeit.timeit(lambda: _describe(array), number=10000) * 100
        for attr in ("data_ptr()", "nbytes", "dtype", "shape", "is_contiguous()", "is_cuda", "get_device()"):
            if hasattr(array, attr.removesuffix("()")):
                us[f".{attr}"] = timeit.timeit(f"a.{attr}", globals={"a": array}, number=10000) * 100
    print("python speed here (us): " + ", ".join(f"{k} {v:.2f}" for k, v in us.items()))
    profile = cProfile.Profile()
    t0 = time.perf_counter()
    profile.enable()
    for _ in range(count):
        send()
    profile.disable()
    print(f"{count} {kind} sends back to back (profiled): {(time.perf_counter() - t0) / count * 1e6:.1f} us each")
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(14)
    print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[-2600:])


def phases_of(marks: dict[str, float], t0: float, t1: float) -> tuple[float, ...]:
    described = marks.get("described", t0)
    lease = marks.get("lease", described)
    slot = marks.get("slot", lease)
    write = marks.get("write", slot)
    post = marks.get("post", write)
    busy = marks.get("meanwhile", post)
    done = max(marks.get("done", busy), busy)  # done already when posted: no wait after the meanwhile work
    written = marks.get("written", done)
    stamps = (t0, described, lease, slot, write, post, busy, done, written, t1)
    return tuple(b - a for a, b in zip(stamps, stamps[1:]))


PHASES = ("describe", "to lease", "lease", "to write", "to post", "meanwhile", "wait", "to return", "return")


def report(
    text: str, phases: dict[str, list[tuple[float, ...]]], leased: dict[str, int], made: int, times: dict[str, list]
) -> None:
    """Print one case's profile: our paths' phase medians, transfer handles made, raw NIXL's variants."""
    for kind, stamps in phases.items():
        if stamps:
            cols = "  ".join(f"{n} {statistics.median(p) * 1e6:.1f}" for n, p in zip(PHASES, zip(*stamps)))
            print(f"profile {text} {kind} (us, median): {cols}  (leased in {leased[kind]} of {len(stamps)})")
    print(f"profile {text}: {made} transfer handles made")
    us = {kind: statistics.median(times[kind]) * 1e6 for kind in times if kind.startswith("raw")}
    rot = f", into {ROTATE_SLOTS} slots in turn {us['raw/rot']:.1f}" if "raw/rot" in us else ""
    print(
        f"profile {text} raw {us['raw']:.1f} us, with 200 B notif {us['raw/notif']:.1f}{rot}, "
        f"through the bindings {us['raw/bind']:.1f}, into our receiver's region {us['raw/rx']:.1f}, "
        f"by our edge's agent {us['raw/ours']:.1f}"
    )
