"""Helpers shared by the command-line entry points (never imported by the model code)."""
