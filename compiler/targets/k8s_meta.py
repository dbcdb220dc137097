"""Object names, labels and ``${VAR}`` placeholders as Kubernetes spells them."""

from __future__ import annotations

import re
from typing import Any

from graph.plan import SELF_HOST_VAR, Plan, Service, host_var

#: Placeholders a Plan may hold besides SG_HOST_<SERVICE>: a multi-host replica's leader and rank.
LEADER_HOST_VAR = "SG_LEADER_HOST"
NODE_RANK_VAR = "SG_NODE_RANK"
#: Where each pod finds its config file (our processes' argv names it relative to the plan).
CONFIG_DIR = "/etc/servegraph"
#: Label telling the leader pod of a multi-host replica from its workers.
HOST_ROLE_LABEL = "servegraph.io/host-role"

_PLACEHOLDER = re.compile(r"\$\{(SG_[A-Z0-9_]+)\}")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
#: Port names are IANA_SVC_NAMEs: at most 15 characters, lowercase, digits and '-'.
_PORT_NAMES = {"nixl_side_channel": "nixl-side", "bootstrap": "bootstrap", "http": "http", "dist": "dist"}


class Names:
    """Kubernetes names of a Plan's objects (one prefix for the whole graph)."""

    def __init__(self, plan: Plan, prefix: str | None) -> None:
        self.plan = plan
        self.prefix = plan.graph + "-" if prefix is None else prefix
        self.config_map = self.prefix + "config"
        self.plan_map = self.prefix + "plan"
        for s in plan.services:
            self._check(self.of(s), s)
            if s.hosts > 1:
                self._check(self.group(s), s)

    def of(self, service: Service | str) -> str:
        """The name of a service's Kubernetes Service and workload (its DNS name in the namespace)."""
        return self.prefix + (service if isinstance(service, str) else service.name)

    def group(self, service: Service) -> str:
        """The LeaderWorkerSet of a multi-host replica. LWS makes a headless Service of its own
        name, so it cannot share the name of ours."""
        return self.of(service) + "-lws"

    def _check(self, name: str, service: Service) -> None:
        if len(name) > 63 or not _DNS_1035.match(name):
            raise ValueError(
                f"node '{service.node}': object name '{name}' is not a DNS-1035 label of at most 63 characters; "
                f"shorten the graph or node name, or pass -O prefix=<short>-"
            )


def file_key(path: str) -> str:
    """The config ConfigMap's key for a service's file at ``path`` (keys allow no '/'; the volume's
    items put it back at ``path``). Paths name their node (code/<node>/...): replicas share one key."""
    return re.sub(r"[^-._a-zA-Z0-9]", "_", path)


def graph_metadata(plan: Plan, namespace: str | None) -> dict[str, Any]:
    """metadata (without a name) of the objects that belong to the whole graph."""
    meta: dict[str, Any] = {"labels": {"app.kubernetes.io/part-of": plan.graph,
                                       "app.kubernetes.io/managed-by": "servegraph"}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def labels(plan: Plan, names: Names, service: Service) -> dict[str, str]:
    """Labels of every object of ``service``; the first two also select its pods."""
    return {
        "app.kubernetes.io/instance": names.of(service),
        "app.kubernetes.io/part-of": plan.graph,
        "app.kubernetes.io/name": service.node,
        "app.kubernetes.io/component": service.role.replace("_", "-"),
        "app.kubernetes.io/managed-by": "servegraph",
    }


def selector(plan: Plan, names: Names, service: Service) -> dict[str, str]:
    """The labels that pick exactly the pods serving ``service`` (a multi-host replica: its leader)."""
    sel = {"app.kubernetes.io/instance": names.of(service), "app.kubernetes.io/part-of": plan.graph}
    if service.hosts > 1:
        sel[HOST_ROLE_LABEL] = "leader"
    return sel


def port_name(name: str) -> str:
    """A Plan port name as a Kubernetes port name."""
    if name in _PORT_NAMES:
        return _PORT_NAMES[name]
    return re.sub(r"[^a-z0-9-]", "-", name.lower())[:15].strip("-")


def placeholders(text: str) -> set[str]:
    """The ``${SG_...}`` variables ``text`` refers to."""
    return set(_PLACEHOLDER.findall(text))


def k8s_expand(text: str) -> str:
    """``${SG_X}`` -> ``$(SG_X)``, the form Kubernetes expands in command, args and env values.

    A literal ``$(`` already in the text is escaped as ``$$(`` so Kubernetes leaves it be.
    """
    return _PLACEHOLDER.sub(r"$(\1)", text.replace("$(", "$$("))


def host_services(plan: Plan) -> dict[str, Service]:
    """SG_HOST_<X> variable -> the service it names."""
    return {host_var(s.name): s for s in plan.services}


def referenced_hosts(plan: Plan, service: Service, text: str, by_var: dict[str, Service]) -> list[Service]:
    """Services whose address ``service`` refers to in ``text``, by name order.

    Raises:
        ValueError: a placeholder naming no service of the plan.
    """
    out = []
    for var in sorted(placeholders(text)):
        if var in (SELF_HOST_VAR, LEADER_HOST_VAR, NODE_RANK_VAR):
            continue
        if var not in by_var:
            raise ValueError(
                f"service '{service.name}' refers to ${{{var}}}, which names no service of graph '{plan.graph}'"
            )
        out.append(by_var[var])
    return out
