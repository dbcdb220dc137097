"""`graph viz`: goldens per pipeline x format, tensor edges drawn apart as the compiler lowers them (NIXL, files),
SVG through Graphviz, HTML offline."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from compiler.cli import app
from compiler.viz import VizError, build_view, render
from compiler.load import load_spec
from compiler.transport import tensor_edge_transports
from tests.goldens import assert_golden

ROOT = pathlib.Path(__file__).resolve().parent.parent
PIPELINES = sorted((ROOT / "pipelines").glob("*.py"))
GOLDEN_FORMATS = {"mermaid": "graph.mmd", "dot": "graph.dot", "html": "graph.html"}


def _spec(path: pathlib.Path, mock: bool = False):
    return load_spec(str(path), mock=mock)[0]


def _draw(spec, fmt: str) -> str:
    """What `graph viz` draws: tensor edges as the compiler lowers them."""
    return render(spec, fmt, tensor_edge_transports(spec))


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_viz_goldens(path: pathlib.Path, request: pytest.FixtureRequest) -> None:
    spec = _spec(path)
    files = {name: _draw(spec, fmt) for fmt, name in GOLDEN_FORMATS.items()}
    assert files == {name: _draw(_spec(path), fmt) for fmt, name in GOLDEN_FORMATS.items()}, "not deterministic"
    assert_golden(request, f"{path.stem}/viz", files)


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_every_node_shows_role_engine_model_replicas_gpus(path: pathlib.Path) -> None:
    spec = _spec(path)
    view = build_view(spec)
    for fmt in GOLDEN_FORMATS:
        text = render(spec, fmt)
        for n in spec.nodes:
            assert n.name in text
            if n.is_engine:
                node = next(v for v in view.nodes if v.name == n.name)
                shown = " ".join(node.details)
                assert n.engine in shown and n.model in shown
                assert f"×{n.replicas}" in shown and f"{n.gpus * n.nodes} GPU" in shown


def test_tensor_edges_look_different_and_say_how_they_move() -> None:
    """Real vLLM hands embeddings over as files (ECExampleConnector), KV over NIXL; the mock moves both over NIXL."""
    spec = _spec(ROOT / "pipelines" / "e_p_d.py")
    mermaid, dot = _draw(spec, "mermaid"), _draw(spec, "dot")
    assert 'n_prefill -.->|"KV · NIXL"| n_decode' in mermaid
    assert 'n_encoder -.->|"Embeddings · files"| n_prefill' in mermaid
    assert 'n_frontend -->|"Text"| n_processor' in mermaid
    assert "linkStyle 2 stroke:#b06000" in mermaid and "linkStyle 3 stroke:#d93025" in mermaid
    kv = next(line for line in dot.splitlines() if '"prefill" -> "decode"' in line)
    emb = next(line for line in dot.splitlines() if '"encoder" -> "prefill"' in line)
    text = next(line for line in dot.splitlines() if '"frontend" -> "processor"' in line)
    assert "style=dashed" in kv and 'label="KV · NIXL"' in kv and "#d93025" in kv
    assert "style=dashed" in emb and 'label="Embeddings · files"' in emb and "#b06000" in emb
    assert "dashed" not in text and 'label="Text"' in text
    mock = _draw(_spec(ROOT / "pipelines" / "e_p_d.py", mock=True), "mermaid")
    assert 'n_encoder -.->|"Embeddings · NIXL"| n_prefill' in mock and "linkStyle 2,3 stroke:#d93025" in mock
    # without the compiler's word, the picture shows the graph's own edge kind
    assert 'n_encoder -.->|"Embeddings · NIXL"| n_prefill' in render(spec, "mermaid")


def test_html_is_self_contained() -> None:
    html = _draw(_spec(ROOT / "pipelines" / "e_p_d.py"), "html")
    assert "://" not in html, "no network reference of any kind (CDN, font, namespace URL)"
    assert "<script" not in html and "<link" not in html and "@import" not in html
    svg = html[html.index("<svg"): html.index("</svg>") + len("</svg>")]
    root = ET.fromstring(svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1))
    ns = "{http://www.w3.org/2000/svg}"
    edges = root.findall(f"{ns}g[@class='edge nixl']") + root.findall(f"{ns}g[@class='edge files']")
    assert len(edges) == 2 and all(e.find(f"{ns}path").get("stroke-dasharray") for e in edges)
    assert "files in a folder both engines see (not NIXL)" in html
    assert not any(e.find(f"{ns}path").get("stroke-dasharray") for e in root.findall(f"{ns}g[@class='edge http']"))
    assert {g.get("id") for g in root.findall(f"{ns}g[@class='node']")} == {
        "node-frontend", "node-processor", "node-encoder", "node-prefill", "node-decode"}


def test_html_boxes_do_not_overlap() -> None:
    from compiler.viz.layout import layout

    for path in PIPELINES:
        boxes = list(layout(build_view(_spec(path))).boxes.values())
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                apart = a.x + a.w <= b.x or b.x + b.w <= a.x or a.y + a.h <= b.y or b.y + b.h <= a.y
                assert apart, (path.stem, a.node.name, b.node.name)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` not installed (apt-get install graphviz)")
@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_svg_is_valid_xml_with_every_node(path: pathlib.Path) -> None:
    spec = _spec(path)
    svg = render(spec, "svg")
    root = ET.fromstring(svg[svg.index("<svg"):])
    titles = {t.text for t in root.iter("{http://www.w3.org/2000/svg}title")}
    assert {n.name for n in spec.nodes} <= titles
    assert "Generated by graphviz" not in svg
    assert svg == render(spec, "svg")


def test_svg_without_dot_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(VizError, match="apt-get install graphviz"):
        render(_spec(ROOT / "pipelines" / "pd.py"), "svg")


def test_unknown_format() -> None:
    with pytest.raises(VizError, match="mermaid, dot, svg, html"):
        render(_spec(ROOT / "pipelines" / "pd.py"), "png")


def test_viz_command_writes_file(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    out = tmp_path / "sub" / "pd.html"
    result = CliRunner().invoke(app, ["viz", "pipelines/pd.py", "--format", "html", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == render(_spec(ROOT / "pipelines" / "pd.py"), "html")
    result = CliRunner().invoke(app, ["viz", "pipelines/pd.py", "--format", "mermaid", "--mock"])
    assert result.exit_code == 0 and "mock (vllm)" in result.stdout and result.stdout.startswith("%% llama-pd")


def test_viz_command_refuses_invalid_graph_and_bad_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, ["viz", "tests/invalid/cycle.py"])
    assert result.exit_code == 1 and "[cycle]" in result.output
    result = CliRunner().invoke(app, ["viz", "pipelines/pd.py", "--format", "png"])
    assert result.exit_code == 2 and "--format must be one of" in " ".join(result.output.split())


# Parses each chart with Mermaid's own parser (mermaid 11 under jsdom); a broken chart must fail.
_MERMAID_PARSE = """
import { JSDOM } from "jsdom";
const dom = new JSDOM("<!DOCTYPE html><body></body>");
globalThis.window = dom.window; globalThis.document = dom.window.document;
const { default: mermaid } = await import("mermaid");
mermaid.initialize({ startOnLoad: false });
const out = {};
for (const [name, text] of Object.entries(JSON.parse(process.env.CHARTS))) {
  try { out[name] = (await mermaid.parse(text)).diagramType; } catch (e) { out[name] = "error: " + (e.message || e); }
}
console.log(JSON.stringify(out));
"""


# Where `npm install mermaid@11 jsdom@25` was run: .ci/run does it in .cache/mermaid.
MERMAID_DIR = pathlib.Path(os.environ.get("SERVEGRAPH_MERMAID_DIR") or ROOT / ".cache" / "mermaid")


@pytest.mark.skipif(
    not (MERMAID_DIR / "node_modules" / "mermaid").is_dir() or shutil.which("node") is None,
    reason=f"needs node and `npm install mermaid@11 jsdom@25` in {MERMAID_DIR} (bash .ci/run does it)",
)
def test_mermaid_parses_with_mermaid_itself() -> None:
    charts = {p.stem: render(_spec(p), "mermaid") for p in PIPELINES}
    charts["broken"] = 'flowchart LR\n  a -->|"x| b ]['
    proc = subprocess.run(
        ["node", "--input-type=module", "-e", _MERMAID_PARSE], cwd=MERMAID_DIR,
        env={**os.environ, "CHARTS": json.dumps(charts)}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    parsed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert parsed.pop("broken").startswith("error:")
    assert parsed == {name: "flowchart-v2" for name in charts if name != "broken"}
