"""The run's record: one typed definition of what a run produced, read and written by everything downstream."""
