# The suite's fixtures come from the ortgate pytest plugin (entry point `pytest11`), so users can run
# these same files against their own model with --ortgate-model/--ortgate-dataset.
