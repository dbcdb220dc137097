"""A graph name that cannot label Kubernetes objects.

codes: bad-graph-name
expect: graph name 'Llama PD' is not a DNS-1123 label
expect: e.g. Graph('llama-pd')
"""

from graph import Frontend, Graph, Worker

with Graph("Llama PD") as g:  # expect-at: bad-graph-name
    Frontend() >> Worker(model="m")
