"""threadline: persistent, parallel, isolated conversation threads over one SQLite file per user."""

__version__ = "0.1.0"

from threadline.config import BlockSpec, Config
from threadline.storage import *  # noqa: F403
from threadline.storage import __all__ as _storage_all

__all__ = ["BlockSpec", "Config", "__version__", *_storage_all]
