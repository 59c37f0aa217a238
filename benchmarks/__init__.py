"""LeadTrail's benchmarks.

The scripts run on their own (``python benchmarks/storage_bench.py``); the
side-by-side comparison with PostgreSQL, Redis Streams and NATS JetStream runs
as ``python -m benchmarks compare`` from the repository root.
"""
