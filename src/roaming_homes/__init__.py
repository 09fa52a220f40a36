"""Roaming home directories for Linux: two-way sync of a home with a server by Unison over SSH."""

__version__ = "0.1.0"
