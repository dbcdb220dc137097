"""The OpenAI-compatible frontend: executes a graph's request path across engines."""
