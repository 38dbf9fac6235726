"""Locations (paths, URLs, ``block://`` references), storage-block files, and fetching sources."""
