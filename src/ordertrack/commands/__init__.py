"""Operator commands, one module per command, named by what it does.

`token` mints a development JWT, `flag` shows or sets the kill switch, `db` migrates the
tracking store's schema, `orders` registers and lists orders, `capacity` turns a load
test's report into a capacity plan. `ordertrack.cli` dispatches to them (and to the
process mains); each exposes `configure(parser)` and `run(args) -> int`.
"""
