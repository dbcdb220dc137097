"""Command-line overrides applied to a resolved graph without editing its file.

* ``model``: every engine node loads this model (e.g. a local tiny model);
  the served name stays what the pipeline says, so clients need no change.
* ``sets``: ``node.field=value`` pairs (value parsed as YAML), e.g. ``decode.replicas=2``.
"""

from __future__ import annotations

from typing import Iterable

import yaml
from pydantic import ValidationError

from .errors import GraphError
from .spec import GraphSpec, NodeSpec


def apply_overrides(spec: GraphSpec, *, model: str | None = None, sets: Iterable[str] = ()) -> GraphSpec:
    """A copy of ``spec`` with the overrides applied (``--mock`` is the compiler's: it knows the engines).

    Raises:
        GraphError: a ``--set`` names an unknown node or field, or a bad value.
    """
    nodes = [_override_node(n, model) for n in spec.nodes]
    for item in sets:
        nodes = _apply_set(nodes, item)
    return spec.model_copy(update={"nodes": tuple(nodes)})


def _override_node(node: NodeSpec, model: str | None) -> NodeSpec:
    if not node.is_engine or not model:
        return node
    return node.model_copy(update={"served_model_name": node.model_name, "model": model})


def _apply_set(nodes: list[NodeSpec], item: str) -> list[NodeSpec]:
    target, sep, raw = item.partition("=")
    name, dot, field = target.partition(".")
    if not sep or not dot or not field:
        raise GraphError("bad-override", f"--set '{item}' is not NODE.FIELD=VALUE", "e.g. --set decode.replicas=2")
    names = [n.name for n in nodes]
    if name not in names:
        raise GraphError("bad-override", f"--set '{item}': no node '{name}'", f"nodes: {', '.join(names)}", node=name)
    node = nodes[names.index(name)]
    in_options = field in node.options
    if not in_options and (field not in NodeSpec.model_fields or field in ("name", "role", "where", "options")):
        settable = sorted(set(NodeSpec.model_fields) - {"name", "role", "where", "options"} | set(node.options))
        raise GraphError("bad-override", f"--set '{item}': node '{name}' has no settable field '{field}'",
                         f"settable: {', '.join(settable)}", node=name, field=field)
    value = yaml.safe_load(raw) if raw else None
    data = node.model_dump()
    if in_options:
        data["options"] = {**data["options"], field: value}
    else:
        data[field] = value
    try:
        updated = NodeSpec.model_validate(data)
        updated._node_class = node.node_class
    except ValidationError as exc:
        msg = exc.errors()[0].get("msg", "invalid")
        raise GraphError("bad-override", f"--set '{item}': {msg}", "", node=name, field=field) from None
    _check_role_field(node, field, value, item)
    return [updated if n is node else n for n in nodes]


def _check_role_field(node: NodeSpec, field: str, value: object, item: str) -> None:
    """A value is checked against the role's own field type and bounds (e.g. replicas >= 1)."""
    from typing import Annotated

    from pydantic import TypeAdapter

    info = node.node_class.model_fields.get(field)
    if info is None:
        return
    try:
        kind = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        TypeAdapter(kind).validate_python(value)
    except ValidationError as exc:
        msg = exc.errors()[0].get("msg", "invalid")
        raise GraphError("bad-override", f"--set '{item}': {msg}", "", node=node.name, field=field) from None
