"""What to run: variant specs, presets and user matrices, and the run's settings."""
