"""The names a caller chooses among, without the math behind them: the command line parses
them before it knows whether any pixel will be computed (an unchanged image needs none)."""

from __future__ import annotations

# As many levels as fit (the planner decides); see ``options.BuildOptions``.
AUTO = "auto"
# The built-in methods, in the order the CLI and the widget offer them (``methods.BUILT_IN``).
METHOD_NAMES = ("mean", "median", "min", "max", "mode", "nearest")
# What becomes of border windows smaller than the coarsening factor (``reduce.coarsen``).
EDGES = ("trim", "keep")
