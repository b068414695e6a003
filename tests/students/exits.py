"""A submission that ends its process at import with status 0: "no output, every file passed" in one process."""

import os

os._exit(0)
