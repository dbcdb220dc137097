"""The local supervisor: runs a Plan's services as processes on this host.

``graph run`` compiles a pipeline, writes the local target's files into a
workdir and hands the Plan to :class:`Supervisor`. Standalone, on the output
of ``graph compile --target local -o DIR``::

    python -m nodes.supervisor DIR

It reads only the Plan and the files beside it (never graph/ or pipelines/).
"""

from .ports import PortConflict, PortInUseError, check_ports
from .supervisor import Supervisor, SupervisorOptions

__all__ = ["PortConflict", "PortInUseError", "Supervisor", "SupervisorOptions", "check_ports"]
