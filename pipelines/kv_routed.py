"""Aggregated workers behind a KV-aware router: requests sharing a prefix go where it is cached."""

from graph import Frontend, Graph, Router, Worker

MODEL = "meta-llama/Llama-3.1-8B-Instruct"

with Graph("llama-kv-routed", "prefix-aware routing over aggregated workers") as g:
    Frontend(port=8000) >> Router(policy="kv") >> Worker(engine="vllm", model=MODEL, replicas=4)
