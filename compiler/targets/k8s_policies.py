"""PodDisruptionBudgets and NetworkPolicies of a graph.

* A graph node with two replicas or more gets a PodDisruptionBudget over all its
  pods (``maxUnavailable: 1``): a node drain takes one replica at a time, never
  the whole stage. (A multi-host replica's pods count one by one, so a drain
  still stops at most one replica.)
* ``-O network_policy=true``: the graph's inner pods (engines, processor,
  router: everything but the frontend) accept connections only from the
  graph's own pods, on any port (HTTP, NIXL side channels, SGLang bootstrap,
  torch distributed); the frontend accepts its HTTP port from anywhere. With a
  ServiceMonitor, pods in ``-O metrics_namespace`` may also reach the inner
  pods' ``http`` port, where /metrics is. Egress is left alone (engines
  download models).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from graph.plan import Plan

PART_OF = "app.kubernetes.io/part-of"
NAME = "app.kubernetes.io/name"
COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = "app.kubernetes.io/managed-by"


def disruption_budgets(plan: Plan, prefix: str, metadata: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Graph node -> its PodDisruptionBudget, for nodes of two replicas or more."""
    out = {}
    for node, replicas in Counter(s.node for s in plan.services).items():
        if replicas < 2:
            continue
        out[node] = {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {**metadata, "name": prefix + node, "labels": {**metadata["labels"], NAME: node}},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {PART_OF: plan.graph, NAME: node}}},
        }
    return out


def network_policies(plan: Plan, prefix: str, metadata: dict[str, Any],
                     metrics_namespace: str | None) -> list[dict[str, Any]]:
    """The inner pods' policy and the frontend's."""
    graph_pods = {"matchLabels": {PART_OF: plan.graph, MANAGED_BY: "servegraph"}}
    inner_rules: list[dict[str, Any]] = [{"from": [{"podSelector": graph_pods}]}]
    if metrics_namespace is not None:
        scraper = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": metrics_namespace}}}
        inner_rules.append({"from": [scraper], "ports": [{"port": "http", "protocol": "TCP"}]})
    inner = {
        **graph_pods,
        "matchExpressions": [{"key": COMPONENT, "operator": "NotIn", "values": ["frontend"]}],
    }
    fe = plan.service(plan.frontend)
    frontend = {"matchLabels": {PART_OF: plan.graph, MANAGED_BY: "servegraph", COMPONENT: "frontend"}}
    return [
        _policy(prefix + "inner", metadata, inner, inner_rules),
        _policy(prefix + "frontend", metadata, frontend, [{"ports": [{"port": fe.http_port, "protocol": "TCP"}]}]),
    ]


def _policy(name: str, metadata: dict[str, Any], pods: dict[str, Any], rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {**metadata, "name": name},
        "spec": {"podSelector": pods, "policyTypes": ["Ingress"], "ingress": rules},
    }


__all__ = ["disruption_budgets", "network_policies"]
