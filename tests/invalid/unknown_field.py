"""A misspelt field: named, with the closest real one suggested.

codes: bad-field
expect: Worker 'worker' has no field 'replica'
expect: did you mean 'replicas'?
"""

from graph import Frontend, Graph, Worker

with Graph("unknown-field") as g:
    Frontend() >> Worker(model="m", replica=2)  # expect-at: bad-field
