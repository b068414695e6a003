"""Shortcut connections, three ways: everything but the three implementations.

    verdict/     the cross-check: results compared element by element under a measured bound
    plumbing/    configuration, weights files, loading the implementations and a user's code
    teaching/    the gradient's paths, the depth study, pictures, the side-by-side page, notebooks
    grader/      the exercises' grader (the skeleton students copy is exercises/backprop.py)
    compare.py   the command line: `shortcut-compare`, or `python compare.py` in the repository
"""
