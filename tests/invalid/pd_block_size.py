"""vLLM: the prefill's KV block size may not exceed the decode's.

codes: pd-block-size
expect: KV edge prefill >> decode: vLLM needs prefill block_size <= decode's (32 > 16)
expect: set block_size<=16 on 'prefill'
"""

from graph import Decode, Frontend, Graph, Prefill

with Graph("pd-block-size") as g:
    Frontend() >> Prefill(model="m", block_size=32) >> Decode(model="m", block_size=16)  # expect-at: pd-block-size
