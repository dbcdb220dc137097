"""Probes: every pod has them, a worker host of a multi-host replica included.

A pod that serves HTTP is probed on the Plan's health path. The worker hosts
of a LeaderWorkerSet serve nothing of their own: they are ranks of the one
engine whose API the leader serves, so their probes ask the leader's health
path (from inside the pod: the kubelet cannot resolve cluster DNS names). A
worker whose leader stops answering is restarted, and LWS's
RecreateGroupOnPodRestart restarts the whole replica, which is what a broken
tensor-parallel group needs.
"""

from __future__ import annotations

import math
import shlex
from typing import Any

from graph.plan import Service

#: Probe periods; the startup probe's failure count stretches to the service's start-up timeout.
_STARTUP_PERIOD_S = 10
_READY_PERIOD_S = 5
_LIVE_PERIOD_S = 10
#: GET a URL with what every image here has (python3: engines' and ours); non-zero exit if it fails.
_GET = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5).close()"


def http_probes(s: Service) -> dict[str, Any]:
    """startup, readiness and liveness probes on the service's own health path."""
    return _probes(s, lambda: {"httpGet": {"path": s.health.path, "port": "http"}})


def leader_probes(s: Service) -> dict[str, Any]:
    """The same probes for a worker host, asking its leader (LWS_LEADER_ADDRESS is in every LWS pod's env)."""
    url = f"http://$LWS_LEADER_ADDRESS:{s.health.port}{s.health.path}"
    script = f"exec python3 -c {shlex.quote(_GET)} \"{url}\""
    return _probes(s, lambda: {"exec": {"command": ["sh", "-c", script]}})


def _probes(s: Service, action: Any) -> dict[str, Any]:
    def probe(period: int, failures: int, timeout: int) -> dict[str, Any]:
        # A fresh dict each: shared ones would come out as YAML anchors.
        return {**action(), "periodSeconds": period, "failureThreshold": failures, "timeoutSeconds": timeout}

    # The startup probe holds the others off until the model has loaded.
    startup_failures = max(3, math.ceil(s.health.startup_timeout_s / _STARTUP_PERIOD_S))
    return {
        "startupProbe": probe(_STARTUP_PERIOD_S, startup_failures, 5),
        "readinessProbe": probe(_READY_PERIOD_S, 3, 5),
        "livenessProbe": probe(_LIVE_PERIOD_S, 6, 10),
    }


__all__ = ["http_probes", "leader_probes"]
