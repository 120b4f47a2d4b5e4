"""The linearized ablation: SAM vs SGD on a network linearized at its initialization (NTK regime)."""
