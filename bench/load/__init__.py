"""The staging load test of the feature log, at this machine's scale (`make bench-load`).

profiles.py (the scenarios), client.py (a load-generator process), feed.py (the updates,
through the gateway's publish Lua), sampler.py (pods' and Redis' resources), report.py
(report.json, report.md, plots), run.py (the whole run: `python -m bench.load`).
"""
