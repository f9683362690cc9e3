"""Developer tools the tests and scripts/ share (not part of the package)."""
