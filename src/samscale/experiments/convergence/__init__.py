"""The convergence experiment: linear convergence of stochastic USAM under interpolation, measured against the bound."""
