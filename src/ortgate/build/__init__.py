"""Building variants into the content-addressed cache, reading their graphs, loading them to run."""
