"""An Encoder feeding a Worker (which encodes its own media): E/PD needs PrefillDecode.

codes: combined-role-split
expect: Encoder 'encoder' >> Worker 'worker': a combined role is wired as if split
expect: use PrefillDecode for E/PD
"""

from graph import Encoder, Frontend, Graph, Processor, Worker

with Graph("combined-encoder-worker") as g:
    enc = Encoder(model="m")
    Frontend() >> Processor() >> enc
    enc >> Worker(model="m")  # expect-at: combined-role-split
