"""The two-layer experiment: GD vs SAM test error vs width in the signal–noise patch (feature-learning) setting."""
