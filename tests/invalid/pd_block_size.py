"""vLLM: the decode's KV block size must be a multiple of the prefill's ("only nP < nD").

codes: pd-block-size
expect: KV edge prefill >> decode: vLLM needs the decode's block_size to be a multiple of the prefill's (16 is not a multiple of 32)
expect: set block_size<=16 on 'prefill', dividing 16
"""

from graph import Decode, Frontend, Graph, Prefill

with Graph("pd-block-size") as g:
    Frontend() >> Prefill(model="m", block_size=32) >> Decode(model="m", block_size=16)  # expect-at: pd-block-size
