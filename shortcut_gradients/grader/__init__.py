"""Learning backprop by hand: a skeleton to fill in (backprop.py) and a grader for it (grade.py)."""
