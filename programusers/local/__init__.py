"""For this machine, not production: the demo (`programusers demo`), the sample generator
(`programusers generate`) and a Python SDK worker pool for Prism (tests and benchmarks)."""
