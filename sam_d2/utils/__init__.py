"""Small utilities shared across sam_d2: atomic file writes, random weights for parity tests."""
