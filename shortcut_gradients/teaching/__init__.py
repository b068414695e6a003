"""Teaching tools: the gradient split into its paths, the depth study, the pictures, the side-by-side page.

They call the implementations' own functions; none computes the network itself."""
