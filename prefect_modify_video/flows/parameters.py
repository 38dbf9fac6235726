"""Moved to ``prefect_modify_video.parameters``; this module re-exports it for old import paths."""

from prefect_modify_video.parameters import BackendName, BackendSpec, ModifyVideoParameters

__all__ = ["BackendName", "BackendSpec", "ModifyVideoParameters"]
