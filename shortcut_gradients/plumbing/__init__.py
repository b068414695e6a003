"""Plumbing: the run's configuration, weights and input files, output files, loading the implementations. No network math."""
