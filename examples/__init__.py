"""Worked examples of extension points (not part of the installed package)."""
