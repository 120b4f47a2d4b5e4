"""From a runs frame to comparisons: ρ* chosen on validation, gains on test, statistics over seeds."""
