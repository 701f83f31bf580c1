"""
Helpers of ``tools/benchmark.py`` (timing, model builders, reports). They live beside the tool,
not in the installed package: the package must not depend on its benchmark.
"""
