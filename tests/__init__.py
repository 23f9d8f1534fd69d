"""xailib tests. A package, so that a top-level test module may share its basename with one in a paper folder
(tests/test_baselines.py and tests/gap/test_baselines.py)."""
