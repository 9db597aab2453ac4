"""Storage: reading and writing a level's write units, and the build transaction."""
