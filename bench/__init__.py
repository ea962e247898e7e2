"""Benchmarks of batchmove against its physical bound and against the usual script.

Run `python bench/run.py --help`; results are a Markdown table on stdout.
"""
