"""Aggregated: one vLLM engine does prefill and decode; two replicas behind the frontend."""

from graph import Frontend, Graph, Worker

MODEL = "meta-llama/Llama-3.1-8B-Instruct"

with Graph("llama-agg", "aggregated vLLM workers") as g:
    Frontend(port=8000) >> Worker(engine="vllm", model=MODEL, replicas=2)
