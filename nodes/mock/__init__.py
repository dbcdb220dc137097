"""servegraph's mock LLM engine: ``python -m nodes.mock --role R --imitate vllm|sglang|trtllm ...``.

A real HTTP server (raw ASGI on our HTTP/1.1 server, nodes/common/http_server.py; orjson) that
speaks the OpenAI API and the P/D/E handshakes of vLLM, SGLang and
TensorRT-LLM, with a simulated tokenizer (or a real ``tokenizers`` one via
``--tokenizer``), simulated prefill/decode timing, a KV block cache with
prefix caching and LRU eviction, the imitated engine's Prometheus metrics and
fault knobs. ``python -m nodes.mock --help`` lists the flags.

Endpoints (every role, every imitation):

* ``POST /v1/chat/completions``, ``POST /v1/completions``: OpenAI shapes, SSE
  streaming, ``stream_options.include_usage``, ``return_token_ids``; plus the
  handshake fields ``kv_transfer_params`` (vLLM), ``bootstrap_host/port/room``
  (SGLang), ``disaggregated_params`` (TRT-LLM), ``ec_transfer_params``.
* ``GET /health`` (503 with the health fault or during ``--startup-delay-s``),
  ``GET /v1/models``, ``GET /metrics`` (also ``/prometheus/metrics``),
  ``POST /tokenize``, ``POST /detokenize``, ``GET /version``.
* SGLang extras: ``POST /generate``, ``GET /server_info``, ``/get_server_info``,
  ``/model_info``, ``/get_model_info``, ``/health_generate``.
* Test and router hooks: ``GET /mock/requests`` / ``DELETE /mock/requests``
  (recorded bodies), ``GET /mock/kv`` (held block hashes, see
  ``nodes.common.kvhash``), ``GET/POST /mock/faults``, ``GET /mock/state``.
* Peer handshakes (mock to mock): ``POST /mock/kv/pull``,
  ``GET /mock/sglang/room/<room>``, ``POST /mock/ec/pull``; served on the HTTP
  port and on ``--bootstrap-port``. The pulls move real bytes over
  ``nodes.transport``: an encoder's embeddings, and a prefill's simulated KV
  (``--kv-block-bytes`` per prompt block) that the decode checks.

Modules: ``config`` (CLI), ``server`` (binding, serving), ``app`` (routes),
``openai_api`` (parsing, bodies), ``engine`` (admission, KV, timing,
handshakes), ``blocks`` (KV pool), ``transfers`` (handshake state, peer
client), ``embeddings`` (what an encoder produces), ``edge`` (embedding
and KV bytes over ``nodes.transport``), ``tokenizer``, ``media``,
``metrics``, ``faults``, ``launch`` (start mocks as subprocesses, for tests
and benchmarks).
"""
