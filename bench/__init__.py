"""Side-by-side benchmarks of webrelease against the fastest S3 copy tools
(docs/design.md "Performance targets").

Run with ``make bench`` (or ``python -m bench``; ``--quick`` for a smoke run). Not part of the test
suite: benchmarks print tables, they do not assert. See bench/README.md.
"""
