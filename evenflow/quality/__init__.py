"""Validation, quarantine and the nothing-lost accounting."""
