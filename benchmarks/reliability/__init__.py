"""Reliability campaigns: bad inputs, faults, damage and concurrency, measured on real slides."""
