"""Contract suites: each port against every backend."""
