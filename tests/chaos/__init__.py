"""The chaos suite: production's processes under load and faults (see docs/RELIABILITY.md);
`python -m tests.chaos.run` runs it, `test_chaos_quick.py` runs its quick mode in `make test`."""
