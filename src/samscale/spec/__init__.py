"""The ground floor: what a run and a study are, as validated data (no torch, no I/O beyond YAML)."""
