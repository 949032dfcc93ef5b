"""Deployment: exports with parity checks, the CPU benchmark and the HTTP service."""
