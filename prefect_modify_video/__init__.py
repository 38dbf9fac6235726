"""Prefect flows that restyle videos of any length through modify-video services."""
