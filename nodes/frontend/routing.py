"""Choosing a replica of a stage for each request: round-robin, least-loaded, or prefix-aware.

Every policy skips replicas that just failed and tracks in-flight requests per
replica. A replica that could not be reached sits out for :data:`DOWN_FOR_S`;
then one request tries it (a probe: an answer puts it back in the rotation, a
failure sends it out again), so a dead replica costs one request per period,
not every request. When every replica of a stage sits out, :meth:`Picker.retry_in`
says so and for how long, and the stage fails fast (503 with Retry-After); then a
probe goes every :data:`ALONE_PROBE_S`, since the request it costs would have
failed anyway, and the stage serves again soon after a replica is back.

The prefix-aware policy keeps, per replica, the hashes of the prompt blocks it
was sent (what the router sent where, as SGLang's cache-aware router does), so
requests sharing a prefix go where that prefix is likely cached; bounded by what the replica's KV cache
holds (:mod:`.kv_capacity`), so it forgets what the engine has evicted and
places a new prefix where it fits; load breaks ties.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import OrderedDict
from typing import Callable

from graph.plan import StageConfig, Upstream

from .kv_capacity import CacheSizes

#: How long a replica that could not be reached stays out of the rotation before one request probes it.
DOWN_FOR_S = 5.0
#: The same when no replica of the stage is up.
ALONE_PROBE_S = 1.0
#: Characters per hashed prompt block (about 16 tokens of English text).
BLOCK_CHARS = 64
#: Block hashes remembered per replica whose cache size is unknown.
MAX_BLOCKS = 50_000


class Picker:
    """Base policy: failure tracking and in-flight counts; subclasses choose."""

    def __init__(self, upstreams: list[Upstream]) -> None:
        if not upstreams:
            raise ValueError("a stage needs at least one upstream")
        self.upstreams = upstreams
        self.inflight: dict[str, int] = {u.service: 0 for u in upstreams}
        self._out_since: dict[str, float] = {}  # replicas sitting out: when they failed or were last probed

    def pick(self, exclude: frozenset[str] = frozenset(), prompt: str = "") -> Upstream:
        """The replica for the next request (not one in ``exclude`` unless no other exists).

        Chosen among the replicas not excluded that are up, and at most one whose time out is over (a
        probe); if there are none, among every replica not excluded (callers that must pick one get one).
        """
        allowed = [u for u in self.upstreams if u.service not in exclude] or list(self.upstreams)
        up = [u for u in allowed if u.service not in self._out_since]
        due = self._due(allowed)
        chosen = self.choose(up + [due] if due is not None else up or allowed, prompt)
        if chosen is due:  # a probe: the other requests keep skipping it meanwhile
            self._out_since[chosen.service] = time.monotonic()
        return chosen

    def choose(self, candidates: list[Upstream], prompt: str) -> Upstream:
        raise NotImplementedError

    def retry_in(self, exclude: frozenset[str] = frozenset()) -> float | None:
        """None if a replica not in ``exclude`` is up or due for a probe; else the seconds until
        one is (every replica sits out: the stage cannot take a request now)."""
        allowed = [u for u in self.upstreams if u.service not in exclude]
        if not allowed or any(u.service not in self._out_since for u in allowed) or self._due(allowed):
            return None
        first = min(self._out_since[u.service] for u in allowed)
        return max(first + self._period(allowed) - time.monotonic(), 0.0)

    def _period(self, allowed: list[Upstream]) -> float:
        """How long a replica sits out: long while another one takes the requests, short when none does."""
        return DOWN_FOR_S if any(u.service not in self._out_since for u in allowed) else ALONE_PROBE_S

    def _due(self, allowed: list[Upstream]) -> Upstream | None:
        """The replica among ``allowed`` that has sat out longest, if its time is over."""
        out = [u for u in allowed if u.service in self._out_since]
        if not out:
            return None
        first = min(out, key=lambda u: self._out_since[u.service])
        return first if self._out_since[first.service] + self._period(allowed) <= time.monotonic() else None

    def failed(self, upstream: Upstream) -> None:
        """The replica could not be reached: out of the rotation for a while."""
        self._out_since[upstream.service] = time.monotonic()

    def recovered(self, upstream: Upstream) -> None:
        """The replica answered: back in the rotation."""
        self._out_since.pop(upstream.service, None)

    def is_down(self, service: str) -> bool:
        """The replica sits out (it failed and no probe has reached it since)."""
        return service in self._out_since

    def down(self) -> list[str]:
        """The replicas sitting out, for messages."""
        return sorted(self._out_since)

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
    """Longest cached prefix wins; a new prefix goes where it fits; load breaks ties.

    Per replica the policy models the engine's prefix cache: the hashes of the prompt blocks it sent
    there, least recently used first. Like the engine's cache the model holds what the replica's KV cache
    holds (:class:`~.kv_capacity.CacheSizes`, in prompt characters) and forgets the least recently used
    beyond that, so it does not count on a prefix the engine has evicted.

    A prompt goes to the replica where it costs the fewest blocks: those of it the replica does not hold,
    plus the live blocks it would push out there (they would have to be computed again). A block is live
    if one LRU cache as large as all the replicas together would still hold it (the policy keeps that
    cache too). So a prefix goes where it is held, and a new one where it fits or pushes out only what is
    no longer used (a finished request's own question, a prefix no longer asked for); then to the least
    loaded. A request's head is its most recently used part, as in the engine, which frees a request's
    blocks tail first.

    Args:
        upstreams: the stage's replicas.
        block_chars: characters per hashed block.
        sizes: what each replica's cache holds (learned from the engines if not given).
    """

    def __init__(self, upstreams: list[Upstream], block_chars: int = BLOCK_CHARS,
                 sizes: CacheSizes | None = None) -> None:
        super().__init__(upstreams)
        self.block_chars = block_chars
        self.sizes = sizes if sizes is not None else CacheSizes(upstreams)
        self._seen: dict[str, OrderedDict[bytes, None]] = {u.service: OrderedDict() for u in upstreams}
        self._live: OrderedDict[bytes, None] = OrderedDict()  # one LRU cache the size of them all
        self._counter = itertools.count()

    def capacity(self, service: str) -> int:
        """Blocks of prompt text the replica's cache holds (:data:`MAX_BLOCKS` if it did not say)."""
        chars = self.sizes.chars(service)
        return MAX_BLOCKS if chars is None else max(chars // self.block_chars, 1)

    def overlap(self, service: str, hashes: list[bytes]) -> int:
        """Leading blocks of ``hashes`` this replica was sent before (and still holds, as far as known)."""
        seen = self._seen[service]
        n = 0
        for h in hashes:
            if h not in seen:
                break
            n += 1
        return n

    def pushed_out(self, service: str, hashes: list[bytes], overlap: int) -> int:
        """Live blocks that sending ``hashes`` here, of which the replica holds ``overlap``, would push
        out of its cache."""
        seen = self._seen[service]
        excess = len(seen) + len(hashes) - overlap - self.capacity(service)
        if excess <= 0:
            return 0
        kept = set(hashes[:overlap])
        live = 0
        for h in seen:  # least recently used first, as the engine evicts
            if h in kept:
                continue
            live += h in self._live
            excess -= 1
            if not excess:
                break
        return live

    def choose(self, candidates: list[Upstream], prompt: str) -> Upstream:
        hashes = block_hashes(prompt, self.block_chars)
        tick = next(self._counter)

        def score(item: tuple[int, Upstream]) -> tuple[int, int, int]:
            i, u = item
            overlap = self.overlap(u.service, hashes)
            cost = len(hashes) - overlap + self.pushed_out(u.service, hashes, overlap)
            return (cost, self.inflight[u.service], (i - tick) % len(candidates))

        _, best = min(enumerate(candidates), key=score)
        self._remember(self._seen[best.service], hashes, self.capacity(best.service))
        self._remember(self._live, hashes, sum(self.capacity(u.service) for u in self.upstreams))
        self.sizes.observe(best, prompt)
        return best

    @staticmethod
    def _remember(lru: OrderedDict[bytes, None], hashes: list[bytes], capacity: int) -> None:
        for h in reversed(hashes):  # the head last: the most recently used
            lru[h] = None
            lru.move_to_end(h)
        while len(lru) > capacity:
            lru.popitem(last=False)


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
