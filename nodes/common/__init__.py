"""Helpers shared by our own processes (frontend, processor, router, mock)."""
