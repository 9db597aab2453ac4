"""Qt widgets, the build runner and its worker; the only modules that import Qt."""
