"""A graph that serves nothing: no engine node.

codes: unused-output no-engine
expect: graph 'no-engine' has no engine node
expect: add a Worker, or Prefill >> Decode
"""

from graph import Frontend, Graph, Processor

with Graph("no-engine") as g:
    Frontend() >> Processor()  # expect-at: unused-output
