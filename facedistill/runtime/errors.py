"""The runtime's user errors: each names the file (or the image's position) and what is wrong.

All are :class:`facedistill.errors.UserError` subclasses, so the CLI prints them as one line
(``error: photo.jpg: cannot decode image: ...``) and exits with code 2. A face app can catch
:class:`~facedistill.errors.UserError` to handle any of them.
"""

from __future__ import annotations

from facedistill.errors import UserError


class ImageError(UserError):
    """An image is missing, unreadable, corrupt, or an array of the wrong shape or dtype."""


class ModelError(UserError):
    """A model file is missing, unreadable, of an unknown kind, or does not fit its backend."""


class DetectorError(UserError):
    """The face detector is unavailable (OpenCV missing) or returned something unusable."""
