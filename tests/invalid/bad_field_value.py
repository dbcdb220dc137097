"""A field with a value out of range: reported with the field's meaning, not a crash.

codes: bad-field
expect: Worker 'worker' field 'tp' = 0: Input should be greater than or equal to 1
expect: set tp (tensor parallel size) to a valid value
"""

from graph import Frontend, Graph, Worker

with Graph("bad-field-value") as g:
    Frontend() >> Worker(model="m", tp=0)  # expect-at: bad-field
