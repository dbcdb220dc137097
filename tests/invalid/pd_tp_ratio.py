"""vLLM's NixlConnector maps prefill ranks onto decode ranks by an integer ratio: tp 2 and 3 cannot pair.

codes: pd-tp-ratio
expect: KV edge prefill >> decode: vLLM's NixlConnector maps prefill tp=2 onto decode tp=3 by an integer ratio, and 3 is not a multiple of 2
expect: give decode a tp that divides or is a multiple of 2 (e.g. 1, 2, 4
"""

from graph import Decode, Frontend, Graph, Prefill

with Graph("pd-tp-ratio") as g:
    Frontend() >> Prefill(model="m", tp=2) >> Decode(model="m", tp=3)  # expect-at: pd-tp-ratio
