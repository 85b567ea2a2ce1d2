"""Adapters to other video libraries' conventions (optional dependencies, imported on use)."""
