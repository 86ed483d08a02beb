"""Scheduling (pure Python, no torch): requests, batches, continuous batching with the radix cache."""
