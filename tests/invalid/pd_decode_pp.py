"""vLLM's NixlConnector has no pipeline parallelism on the decode side; SGLang wants the prefill's pp or 1.

codes: pd-pp pd-pp
expect: vLLM's NixlConnector does not support pipeline parallelism on the decode side (decode pp=2)
expect: SGLang needs the decode's pp to equal the prefill's or be 1 (decode pp=2, prefill pp=4)
"""

from graph import Decode, Frontend, Graph, Prefill

with Graph("pd-decode-pp") as g:
    fe = Frontend()
    fe >> Prefill(model="m") >> Decode(model="m", pp=2)  # expect-at: pd-pp
    fe >> Prefill(name="sp", engine="sglang", model="s", pp=4) >> Decode(name="sd", engine="sglang", model="s", pp=2)  # expect-at: pd-pp
