"""Qt widgets and the build worker; the only modules that import Qt."""
