"""Errors raised by the tensor edge."""

from __future__ import annotations


class TransportError(RuntimeError):
    """A transfer failed: the peer died, refused, or sent something inconsistent."""


class TransportTimeout(TransportError, TimeoutError):
    """A transfer did not finish before its deadline (a silent or dead peer)."""
