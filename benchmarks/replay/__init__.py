"""Search strategies replayed on the recorded curves table (benchmarks/search_replay.py)."""
