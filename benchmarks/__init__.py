"""Side-by-side benchmarks: gristmill against the machine's limit and the usual alternatives.

``python -m benchmarks --size small|full`` (``make bench-small``, ``make bench``). Each case runs in
its own child process (so allocator and thread settings never leak between cases) on the same
files, one after another in one process tree, and the report gives ratios, not absolute rates:
the machine may be shared. Results are printed and written to ``.bench/results.md``.
"""
