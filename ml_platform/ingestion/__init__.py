"""Ingestion domain."""
