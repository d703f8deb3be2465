"""Validation: prove an exported package generates what transformers generates."""
