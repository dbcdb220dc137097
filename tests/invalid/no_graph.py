"""A file that builds no Graph.

codes: load-error
expect: defines no Graph
expect: build one at module level
"""

MODEL = "m"
