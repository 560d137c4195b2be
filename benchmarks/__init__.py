"""The project's benchmark suite: ``python -m benchmarks [name ...] [--quick]``."""
