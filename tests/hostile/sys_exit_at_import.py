"""Hostile: sys.exit(0) while it imports."""

import sys

sys.exit(0)
