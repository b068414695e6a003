"""Research beside the product: the survey of the bound at size, and the catalogue of injected faults it and the tests use."""
