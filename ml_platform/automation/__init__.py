"""Automation domain."""
