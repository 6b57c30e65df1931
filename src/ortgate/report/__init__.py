"""What a run's record becomes: tables, cross-run comparisons, cross-machine reports."""
