# Root conftest: the ortgate fixtures come from the installed plugin (entry point `pytest11`), for
# tests/ and benchmarks/ alike; this file only marks the project root for pytest's rootdir.
