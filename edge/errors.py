"""User-facing errors: one line that names the problem and what to do."""


class EdgeError(Exception):
    """An error a user can fix. Commands print `str(err)` on one line and exit non-zero."""

    exit_code = 2


class ModelError(EdgeError):
    """The model file is missing, corrupt or lacks edge-inspect metadata."""


class SourceError(EdgeError):
    """A frame source (camera, video, folder) cannot be opened or read."""


class FrameError(EdgeError):
    """One frame cannot be inspected (wrong size, corrupt file); the part is rejected fail-safe."""
