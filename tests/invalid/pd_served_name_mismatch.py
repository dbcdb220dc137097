"""Prefill and decode of one model under two served names: no request would find a whole path.

codes: pd-served-name-mismatch
expect: KV edge prefill >> decode: served model names differ ('llama' vs 'llama-chat')
expect: give 'prefill' and 'decode' the same served_model_name=
"""

from graph import Decode, Frontend, Graph, Prefill

with Graph("pd-served-names") as g:
    fe = Frontend()
    pre = Prefill(model="m", served_model_name="llama")
    fe >> pre >> Decode(model="m", served_model_name="llama-chat")  # expect-at: pd-served-name-mismatch
