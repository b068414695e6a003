"""Shared plumbing: configuration, weight and input I/O, comparison and reporting. No network math."""
