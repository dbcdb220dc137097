"""Media into a node that wants KV.

codes: port-type-mismatch
expect: Processor 'processor' >> Decode 'decode': no output of 'processor' (media: Media) fits an input of 'decode' (kv: KV)
"""

from graph import Decode, Frontend, Graph, Processor

with Graph("port-type-mismatch") as g:
    Frontend() >> Processor() >> Decode(model="m")  # expect-at: port-type-mismatch
