"""The process that serves a node of your own (graph.custom): ``python -m nodes.custom --config X.json``."""
