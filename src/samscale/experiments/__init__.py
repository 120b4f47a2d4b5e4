"""Experiments of the paper that are more than a sweep of training runs, each a function `run_*(budget, out, …)`.

`stability`: sharpness and Hessian non-uniformity of SGD, USAM and SAM minima against the linear-stability bounds.
"""
