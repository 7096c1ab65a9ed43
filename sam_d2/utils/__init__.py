"""Small utilities shared across sam_d2 (random weights for parity tests and benchmarks)."""
