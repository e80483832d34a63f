"""Features domain."""
