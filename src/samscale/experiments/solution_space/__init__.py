"""The solution-space experiment: which function GD and SAM end at, for small and large 1-D ReLU networks."""
