"""Hostile: ends its process with status 0 while it imports, so no exception says what happened."""

import os

os._exit(0)
