"""Serving domain."""
