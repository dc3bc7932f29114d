"""Black-76 pricing (vectorised kernels and a scalar reference), Greeks, implied vol."""
