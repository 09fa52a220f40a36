"""Benchmarks: what a sync costs, side by side with raw unison and rsync (`bench/run`)."""
