"""Benchmarks of the issue "Performance and scale": one module per figure, see docs/benchmarks.md.

Each module runs as ``python -m benchmarks.<name>`` (``--help`` for its arguments,
``--smoke`` for a seconds-long version), prints a markdown table and writes JSON to
``benchmarks/results/<name>.json``. ``python -m benchmarks.run_all`` runs them all.
"""
