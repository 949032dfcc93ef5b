"""Deployment: inference backends, exports with parity checks, benchmarks, Grad-CAM, HTTP."""
