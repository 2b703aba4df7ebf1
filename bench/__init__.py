"""Orchard's benchmarks: each capability measured against a plain baseline in the same run."""
