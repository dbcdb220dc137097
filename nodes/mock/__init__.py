"""servegraph's mock LLM engine: ``python -m nodes.mock --role R --imitate vllm|sglang|trtllm ...``.

A real HTTP server that speaks the OpenAI API and the P/D/E handshakes of
vLLM, SGLang and TensorRT-LLM, with a simulated tokenizer (or a real one),
simulated prefill/decode timing, a KV block cache with prefix caching, the
imitated engine's Prometheus metrics and fault knobs. Modules:

* ``config``: the command line.       * ``server``: binding and uvicorn.
* ``app``: the ASGI routes.           * ``openai_api``: request parsing, response bodies.
* ``engine``: admission, KV, timing, handshakes.
* ``blocks``: the KV block pool.      * ``transfers``: handshake state and the peer client.
* ``tokenizer``, ``media``: prompt ids.  * ``metrics``, ``faults``.
"""
