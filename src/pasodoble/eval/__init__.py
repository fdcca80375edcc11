"""Benchmark evaluation: registry (``benchmarks``), prompts, metrics (pass@1 over k, maj@k, pass@k),
the resumable runner, result tables and charts (``report``), and the memorization analysis.

Entry points: ``pasodoble eval``, ``pasodoble report``, ``pasodoble analyze memorization``.
"""
