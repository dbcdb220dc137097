"""Prefill and decode serving different models.

codes: pd-model-mismatch
expect: KV edge prefill >> decode: model differs ('org/a' vs 'org/b')
expect: set the same model= on 'prefill' and 'decode'
"""

from graph import Decode, Frontend, Graph, Prefill

with Graph("pd-model-mismatch") as g:
    Frontend() >> Prefill(model="org/a") >> Decode(model="org/b")  # expect-at: pd-model-mismatch
