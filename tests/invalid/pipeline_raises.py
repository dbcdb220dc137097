"""A Python error in the pipeline's own code: reported at its line, not as our crash.

codes: load-error
expect: the pipeline raised ZeroDivisionError: integer division or modulo by zero
expect: replicas = 4 // 0
"""

from graph import Frontend, Graph, Worker

with Graph("pipeline-raises") as g:
    replicas = 4 // 0  # expect-at: load-error
    Frontend() >> Worker(model="m", replicas=replicas)
