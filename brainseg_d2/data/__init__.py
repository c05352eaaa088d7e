"""Data: sources, reading, pre-processing and the built-in MRI phantom."""
