"""Retention and erasure: what the store keeps, for how long, and forgetting on request."""
