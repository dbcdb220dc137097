"""Prometheus metrics under the imitated engine's names, plus ``mock_*`` extras.

vLLM and TRT-LLM names are from their sources (vllm/v1/metrics/loggers.py in
vLLM 0.32; tensorrt_llm/metrics/collector.py, whose ``trtllm_`` metrics
trtllm-serve exposes at ``/prometheus/metrics``); SGLang's from its
``--enable-metrics`` exporter. Labels follow each engine: ``model_name`` (+
``engine`` for vLLM, ``engine_type`` for TRT-LLM).

The hot path only bumps plain Python numbers (prometheus_client's locked
counters cost ~2.5 us each, a third of a request's budget); a custom
collector turns them into metric families when /metrics is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0)
_E2E_BUCKETS = (0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)


@dataclass(frozen=True)
class _Names:
    running: str
    waiting: str
    kv_usage: str
    prompt_tokens: str
    generation_tokens: str
    ttft: str
    e2e: str
    success: str
    prefix_queries: str | None = None  # counters of tokens (vLLM)
    prefix_hits: str | None = None
    cached_tokens: str | None = None  # counter of hit tokens (SGLang)
    hit_rate: str | None = None  # gauge (SGLang, TRT-LLM)
    reused_blocks: str | None = None  # counters of blocks (TRT-LLM)
    missed_blocks: str | None = None
    success_by_reason: bool = True  # a finished_reason label (vLLM, TRT-LLM; SGLang has none)


# Counter names without the _total suffix (prometheus_client adds it).
_NAMES = {
    "vllm": _Names(
        running="vllm:num_requests_running", waiting="vllm:num_requests_waiting",
        kv_usage="vllm:kv_cache_usage_perc", prompt_tokens="vllm:prompt_tokens",
        generation_tokens="vllm:generation_tokens", ttft="vllm:time_to_first_token_seconds",
        e2e="vllm:e2e_request_latency_seconds", success="vllm:request_success",
        prefix_queries="vllm:prefix_cache_queries", prefix_hits="vllm:prefix_cache_hits",
    ),
    "sglang": _Names(
        running="sglang:num_running_reqs", waiting="sglang:num_queue_reqs", kv_usage="sglang:token_usage",
        prompt_tokens="sglang:prompt_tokens", generation_tokens="sglang:generation_tokens",
        ttft="sglang:time_to_first_token_seconds", e2e="sglang:e2e_request_latency_seconds",
        success="sglang:num_requests", cached_tokens="sglang:cached_tokens", hit_rate="sglang:cache_hit_rate",
        success_by_reason=False,
    ),
    "trtllm": _Names(
        running="trtllm_num_requests_running", waiting="trtllm_num_requests_waiting",
        kv_usage="trtllm_kv_cache_utilization", prompt_tokens="trtllm_prompt_tokens",
        generation_tokens="trtllm_generation_tokens", ttft="trtllm_time_to_first_token_seconds",
        e2e="trtllm_e2e_request_latency_seconds", success="trtllm_request_success",
        hit_rate="trtllm_kv_cache_hit_rate", reused_blocks="trtllm_kv_cache_reused_blocks",
        missed_blocks="trtllm_kv_cache_missed_blocks",
    ),
}


class _Histogram:
    """Bucket counts without locks (one event loop thread writes them)."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.bounds = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self, name: str, doc: str, labels: dict[str, str]) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(name, doc, labels=list(labels))
        cumulative, acc = [], 0
        for bound, count in zip(self.bounds + (float("inf"),), self.counts):
            acc += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(float(bound)), acc))
        fam.add_metric(list(labels.values()), cumulative, self.sum)
        return fam


class MockMetrics:
    """All metrics of one mock process; plain attributes written on the hot path.

    Args:
        imitate: vllm | sglang | trtllm | openai.
        model_name: served model name (the ``model_name`` label).
        role: the engine's role (label of ``mock_requests``).
        kv_blocks: KV cache capacity in blocks (vLLM's ``num_gpu_blocks``).
        block_size: tokens per block.
    """

    def __init__(self, imitate: str, model_name: str, role: str, kv_blocks: int = 0, block_size: int = 0) -> None:
        self._n = _NAMES.get(imitate, _NAMES["vllm"])  # a plain OpenAI server: vLLM's metric names
        # vLLM's vllm:cache_config_info: a gauge of 1 whose labels are the CacheConfig's fields (these are
        # the ones a router reads: the cache's size; loggers.py log_metrics_info, config/cache.py metrics_info).
        self._cache_info = {"block_size": str(block_size), "num_gpu_blocks": str(kv_blocks),
                            "enable_prefix_caching": "True", "engine": "0"} if imitate == "vllm" and kv_blocks else None
        self._labels = {"model_name": model_name}
        if imitate == "vllm":
            self._labels["engine"] = "0"
        elif imitate == "trtllm":
            self._labels["engine_type"] = "trtllm"
        self._role = role
        self.running = 0
        self.waiting = 0
        self.kv_usage = 0.0
        self.cached_blocks = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.prefix_query_tokens = 0
        self.prefix_hit_tokens = 0
        self.prefix_query_blocks = 0
        self.prefix_hit_blocks = 0
        self.prefix_waits = 0
        self.kv_received = 0
        self.kv_blocks_received = 0
        self.kv_sent = 0
        self.ec_received = 0
        self.ec_bytes_received = 0
        self.kv_bytes_received = 0
        self.success: dict[str, int] = defaultdict(int)
        self.requests: dict[str, int] = defaultdict(int)
        self.errors: dict[str, int] = defaultdict(int)
        self.faults: dict[str, int] = defaultdict(int)
        self.ttft = _Histogram(_TTFT_BUCKETS)
        self.e2e = _Histogram(_E2E_BUCKETS)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def prefix(self, prompt_tokens: int, query_blocks: int, hit_blocks: int, block_size: int) -> None:
        """Record one prefix-cache lookup."""
        self.prefix_query_tokens += prompt_tokens
        self.prefix_hit_tokens += hit_blocks * block_size
        self.prefix_query_blocks += query_blocks
        self.prefix_hit_blocks += hit_blocks

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        """prometheus_client's collector protocol: build every family from the current numbers."""
        n, labels = self._n, self._labels
        names, values = list(labels), list(labels.values())

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            fam = GaugeMetricFamily(name, doc, labels=names)
            fam.add_metric(values, value)
            return fam

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            fam = CounterMetricFamily(name, doc, labels=names)
            fam.add_metric(values, value)
            return fam

        yield gauge(n.running, "Requests running.", self.running)
        yield gauge(n.waiting, "Requests waiting.", self.waiting)
        yield gauge(n.kv_usage, "KV cache usage (fraction of blocks pinned by running requests).", self.kv_usage)
        yield counter(n.prompt_tokens, "Prompt tokens processed.", self.prompt_tokens)
        yield counter(n.generation_tokens, "Generation tokens produced.", self.generation_tokens)
        yield self.ttft.family(n.ttft, "Time to first token.", labels)
        yield self.e2e.family(n.e2e, "End-to-end request latency.", labels)
        if n.success_by_reason:
            success = CounterMetricFamily(n.success, "Finished requests.", labels=names + ["finished_reason"])
            for reason in ("length", "stop"):
                success.add_metric(values + [reason], self.success.get(reason, 0))
            yield success
        else:
            yield counter(n.success, "Finished requests.", sum(self.success.values()))
        if n.prefix_queries and n.prefix_hits:
            yield counter(n.prefix_queries, "Prompt tokens looked up in the prefix cache.", self.prefix_query_tokens)
            yield counter(n.prefix_hits, "Prompt tokens found in the prefix cache.", self.prefix_hit_tokens)
        if n.cached_tokens:
            yield counter(n.cached_tokens, "Prompt tokens served from the prefix cache.", self.prefix_hit_tokens)
        if n.hit_rate:
            rate = self.prefix_hit_tokens / self.prefix_query_tokens if self.prefix_query_tokens else 0.0
            yield gauge(n.hit_rate, "Prefix cache hit rate (tokens, since start).", rate)
        if n.reused_blocks and n.missed_blocks:
            yield counter(n.reused_blocks, "KV blocks reused.", self.prefix_hit_blocks)
            yield counter(n.missed_blocks, "KV blocks missed.", self.prefix_query_blocks - self.prefix_hit_blocks)
        if self._cache_info:
            info = GaugeMetricFamily("vllm:cache_config_info", "Information of the LLMEngine CacheConfig",
                                     labels=list(self._cache_info))
            info.add_metric(list(self._cache_info.values()), 1.0)
            yield info
        yield from self._mock_families()

    def _mock_families(self) -> Iterator[Metric]:
        req = CounterMetricFamily("mock_requests", "Requests by role and kind (aggregate, prefill, decode, encode).",
                                  labels=["role", "kind"])
        for kind, count in sorted(self.requests.items()):
            req.add_metric([self._role, kind], count)
        yield req
        for name, doc, value in (
            ("mock_kv_transfers_received", "KV handshakes completed as the receiving decode.", self.kv_received),
            ("mock_kv_blocks_received", "KV blocks received from a prefill.", self.kv_blocks_received),
            ("mock_kv_transfers_sent", "KV offers and rooms published as a prefill.", self.kv_sent),
            ("mock_ec_transfers_received", "Encoder embedding handles consumed.", self.ec_received),
            ("mock_ec_bytes_received", "Embedding bytes received over the tensor edge.", self.ec_bytes_received),
            ("mock_kv_bytes_received", "KV bytes received from a prefill over the tensor edge.",
             self.kv_bytes_received),
            ("mock_prefix_hit_blocks", "Prompt blocks found in the prefix cache.", self.prefix_hit_blocks),
            ("mock_prefix_query_blocks", "Prompt blocks looked up in the prefix cache.", self.prefix_query_blocks),
            ("mock_prefix_waits", "Requests whose prefix hit waited for another request's prefill to compute it.",
             self.prefix_waits),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily("mock_kv_blocks_cached", "Blocks holding a hashed prefix.", value=self.cached_blocks)
        for name, doc, label, data in (("mock_errors", "Error responses by HTTP status.", "status", self.errors),
                                       ("mock_faults_injected", "Injected faults by kind.", "fault", self.faults)):
            fam = CounterMetricFamily(name, doc, labels=[label])
            for key, count in sorted(data.items()):
                fam.add_metric([key], count)
            yield fam
