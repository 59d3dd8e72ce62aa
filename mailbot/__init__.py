"""mailbot: email intake for research-grant calls."""

__version__ = "0.1.0"
