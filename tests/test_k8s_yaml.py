"""The k8s target's YAML emitter: PyYAML reads back exactly what was written, and writes the same text."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from compiler.targets import k8s
from compiler.targets.k8s_yaml import dump, dump_all
from tests.test_k8s_manifests import PIPELINES, compile_plan

TRICKY = [
    "", " ", "8000", "0x1F", "1e3", "yes", "No", "on", "null", "~", "true", "2026-11-25", "a: b", "a:b", "x:",
    "-", "-m", "--port", "- x", "#c", "a #b", "a#b", " lead", "trail ", "{\"kv_role\":\"kv_producer\"}", "[1]",
    "it's", "tab\there", "é", "*ref", "&anchor", "!tag", "%dir", "@at", "`tick", "|", ">", "?", "$(SG_SELF_HOST)",
    "${SG_HOST_X}", "$$(LITERAL)", "cuda_copy,cuda_ipc", "a\nb\n", "a\nb", " a\nb\n", "a \nb\n", "a\n\n", "\nb\n",
    "a\tb\nc\n", "line\n  indented\n", "\x07bell",
]


def _pyyaml(doc: Any) -> str:
    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    def literal(d: yaml.SafeDumper, v: str) -> yaml.ScalarNode:
        return d.represent_scalar("tag:yaml.org,2002:str", v, style="|" if "\n" in v else None)

    Dumper.add_representer(str, literal)
    return yaml.dump(doc, Dumper=Dumper, sort_keys=True, default_flow_style=False, width=1 << 20)


@pytest.mark.parametrize("value", TRICKY, ids=repr)
def test_strings_read_back_unchanged(value: str) -> None:
    doc = {"k": value, "list": [value, {"a": value, "b": [value]}], value or "e": 1}
    assert yaml.safe_load(dump(doc)) == doc


def test_other_scalars_and_empties() -> None:
    doc = {"b": True, "f": False, "n": None, "i": 3, "x": 1.5, "d": {}, "l": [], "nested": [[1, 2], [], {}]}
    assert yaml.safe_load(dump(doc)) == doc


def test_several_documents() -> None:
    docs = [{"a": 1}, {"b": ["x"]}]
    assert list(yaml.safe_load_all(dump_all(docs))) == docs


def test_same_text_as_pyyaml_for_every_example() -> None:
    for path in PIPELINES:
        for options in (k8s.Options(), k8s.Options(flavor="dynamo", namespace="ns", hf_token_secret="hf")):
            try:
                files = k8s.render(compile_plan(path), options)
            except ValueError:
                continue  # a graph the Dynamo flavour refuses (tested elsewhere)
            for name, text in files.items():
                docs = [d for d in yaml.safe_load_all(text) if d is not None]
                # A file may open with one comment line of ours (k8s_security.runs_as_note): not the emitter's.
                body = text.split("\n", 1)[1] if text.startswith("# ") else text
                assert "---\n".join(_pyyaml(d) for d in docs) == body, f"{path.stem}/{name}"
