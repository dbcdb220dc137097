"""A mock knob the mock engine does not have: refused by validate, not by a traceback at compile.

codes: unknown-mock-knob
expect: Worker 'worker': the mock engine has no knob 'itl_msec'
expect: did you mean 'itl_ms'? known knobs:
"""

from graph import Frontend, Graph, Worker

with Graph("unknown-mock-knob") as g:
    Frontend() >> Worker(engine="mock", model="m", mock={"itl_msec": 5})  # expect-at: unknown-mock-knob
