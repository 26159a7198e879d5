"""Launchers and stand-ins shared by the integration and end-to-end tests."""
