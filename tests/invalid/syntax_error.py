"""A syntax error in the pipeline file.

codes: load-error
expect: SyntaxError
"""

from graph import Frontend, Graph, Worker

with Graph("syntax-error") as g:
    Frontend() >> Worker(model="m"  # expect-at: load-error
