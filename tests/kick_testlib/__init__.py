"""Helpers for kick's tests and benchmarks (not shipped): loopback judge server, reference
implementations the shipped code is checked against, and the tiny random-model builder."""
