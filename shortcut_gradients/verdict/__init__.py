"""The cross-check: implementations compared element by element, the finite-difference oracle's verdict, the report."""
