"""Moved to ``prefect_modify_video.parameters``; re-exported here for old import paths (one release).

Code of the package imports ``prefect_modify_video.parameters``: importing this module first
loads ``prefect_modify_video.flows`` (the flow, then the tasks), so a task module importing it
would bring back the import cycle ``tests/test_imports.py`` guards against.
"""

from prefect_modify_video.parameters import BackendName, BackendSpec, ModifyVideoParameters, RetryOptions, SeamOptions

__all__ = ["BackendName", "BackendSpec", "ModifyVideoParameters", "RetryOptions", "SeamOptions"]
