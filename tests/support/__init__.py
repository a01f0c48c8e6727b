"""Helpers shared by the test suites: real local servers and synthetic data."""
