"""Mock settings on a real engine.

codes: mock-field
expect: Worker 'worker' sets mock settings but its engine is 'vllm'
expect: use engine='mock'
"""

from graph import Frontend, Graph, Worker

with Graph("mock-field") as g:
    Frontend() >> Worker(engine="vllm", model="m", imitate="sglang")  # expect-at: mock-field
