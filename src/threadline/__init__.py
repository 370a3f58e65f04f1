"""threadline: persistent, parallel, isolated conversation threads over one SQLite file per user."""

from threadline.config import BlockSpec, Config
from threadline.storage import *  # noqa: F403
from threadline.storage import __all__ as _storage_all

__all__ = ["BlockSpec", "Config", *_storage_all]
