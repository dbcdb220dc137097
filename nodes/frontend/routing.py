"""Choosing a replica of a stage for each request: round-robin, least-loaded, or prefix-aware.

Every policy skips replicas that just failed (they sit out for :data:`DOWN_FOR_S`)
and tracks in-flight requests per replica. The prefix-aware policy keeps, per
replica, the hashes of the prompt blocks it was sent (what the router sent
where, as SGLang's cache-aware router does), so requests sharing a prefix go
where that prefix is likely cached; load breaks ties.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import OrderedDict
from typing import Callable

from graph.plan import StageConfig, Upstream

#: How long a replica that could not be reached stays out of the rotation.
DOWN_FOR_S = 5.0
#: Characters per hashed prompt block (about 16 tokens of English text).
BLOCK_CHARS = 64
#: Block hashes remembered per replica.
MAX_BLOCKS = 50_000


class Picker:
    """Base policy: failure tracking and in-flight counts; subclasses choose."""

    def __init__(self, upstreams: list[Upstream]) -> None:
        if not upstreams:
            raise ValueError("a stage needs at least one upstream")
        self.upstreams = upstreams
        self.inflight: dict[str, int] = {u.service: 0 for u in upstreams}
        self._down_until: dict[str, float] = {}

    def candidates(self, exclude: frozenset[str]) -> list[Upstream]:
        """Replicas that are up and not excluded; if none is up, those not excluded."""
        now = time.monotonic()
        allowed = [u for u in self.upstreams if u.service not in exclude] or list(self.upstreams)
        up = [u for u in allowed if self._down_until.get(u.service, 0.0) <= now]
        return up or allowed

    def pick(self, exclude: frozenset[str] = frozenset(), prompt: str = "") -> Upstream:
        """The replica for the next request (not one in ``exclude`` unless no other exists)."""
        return self.choose(self.candidates(exclude), prompt)

    def choose(self, candidates: list[Upstream], prompt: str) -> Upstream:
        raise NotImplementedError

    def failed(self, upstream: Upstream) -> None:
        """The replica could not be reached: out of the rotation for a while."""
        self._down_until[upstream.service] = time.monotonic() + DOWN_FOR_S

    def recovered(self, upstream: Upstream) -> None:
        """The replica answered: back in the rotation."""
        self._down_until.pop(upstream.service, None)

    def is_down(self, service: str) -> bool:
        return self._down_until.get(service, 0.0) > time.monotonic()

    def started(self, upstream: Upstream) -> None:
        self.inflight[upstream.service] += 1

    def finished(self, upstream: Upstream) -> None:
        self.inflight[upstream.service] -= 1


class RoundRobin(Picker):
    """Each replica in turn."""

    def __init__(self, upstreams: list[Upstream]) -> None:
        super().__init__(upstreams)
        self._counter = itertools.count()

    def choose(self, candidates: list[Upstream], prompt: str) -> Upstream:
        return candidates[next(self._counter) % len(candidates)]


class LeastLoaded(Picker):
    """The replica with the fewest requests in flight (round-robin among equals)."""

    def __init__(self, upstreams: list[Upstream]) -> None:
        super().__init__(upstreams)
        self._counter = itertools.count()

    def choose(self, candidates: list[Upstream], prompt: str) -> Upstream:
        low = min(self.inflight[u.service] for u in candidates)
        best = [u for u in candidates if self.inflight[u.service] == low]
        return best[next(self._counter) % len(best)]


def block_hashes(text: str, block_chars: int = BLOCK_CHARS) -> list[bytes]:
    """Chained hashes of the prompt's full blocks: block i's hash covers blocks 0..i."""
    out: list[bytes] = []
    prev = b""
    data = text.encode()
    for start in range(0, len(data) - block_chars + 1, block_chars):
        prev = hashlib.blake2b(prev + data[start:start + block_chars], digest_size=8).digest()
        out.append(prev)
    return out


class PrefixAware(Picker):
    """Longest cached prefix wins; load breaks ties. Remembers what it sent where (LRU)."""

    def __init__(self, upstreams: list[Upstream], block_chars: int = BLOCK_CHARS) -> None:
        super().__init__(upstreams)
        self.block_chars = block_chars
        self._seen: dict[str, OrderedDict[bytes, None]] = {u.service: OrderedDict() for u in upstreams}
        self._counter = itertools.count()

    def overlap(self, service: str, hashes: list[bytes]) -> int:
        """Leading blocks of ``hashes`` this replica was sent before."""
        seen = self._seen[service]
        n = 0
        for h in hashes:
            if h not in seen:
                break
            n += 1
        return n

    def choose(self, candidates: list[Upstream], prompt: str) -> Upstream:
        hashes = block_hashes(prompt, self.block_chars)
        tick = next(self._counter)

        def score(item: tuple[int, Upstream]) -> tuple[int, int, int]:
            i, u = item
            return (-self.overlap(u.service, hashes), self.inflight[u.service], (i - tick) % len(candidates))

        _, best = min(enumerate(candidates), key=score)
        self._remember(best.service, hashes)
        return best

    def _remember(self, service: str, hashes: list[bytes]) -> None:
        seen = self._seen[service]
        for h in hashes:
            seen[h] = None
            seen.move_to_end(h)
        while len(seen) > MAX_BLOCKS:
            seen.popitem(last=False)


POLICIES: dict[str, Callable[[list[Upstream]], Picker]] = {
    "round_robin": RoundRobin,
    "least_loaded": LeastLoaded,
    "kv": PrefixAware,
}


def make_picker(stage: StageConfig) -> Picker:
    """The policy a stage's config names."""
    try:
        factory = POLICIES[stage.policy]
    except KeyError:
        raise ValueError(f"unknown routing policy '{stage.policy}' (known: {', '.join(sorted(POLICIES))})") from None
    return factory(stage.upstreams)
