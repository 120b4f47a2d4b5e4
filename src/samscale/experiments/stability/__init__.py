"""The stability experiment: sharpness and Hessian non-uniformity of SGD, USAM and SAM minima vs the bounds."""
