"""A Worker (prefills and decodes itself) wired to a Decode as if it were a Prefill.

codes: combined-role-split
expect: Worker 'worker' >> Decode 'decode': a combined role is wired as if split
expect: use Prefill (P/D) or EncodePrefill (EP/D)
"""

from graph import Decode, Frontend, Graph, Worker

with Graph("combined-role-split") as g:
    Frontend() >> Worker(model="m") >> Decode(model="m")  # expect-at: combined-role-split
