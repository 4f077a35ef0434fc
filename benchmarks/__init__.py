"""framewire's benchmarks: `python -m benchmarks [--quick] [--json]` runs them all.

Each figure is measured in the same run as the baseline it is compared with (see
benchmarks/harness.py). `python benchmarks/accuracy.py` measures card recognition and
`python benchmarks/ledger.py` the ledger on their own.
"""
