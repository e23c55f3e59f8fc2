"""Per-user upload limiter: run ``python -m examples.uploads``."""

from .demo import ModeResult, UploadsReport, demo, serve, show
from .limiter import Store, UploadLimiter, Uploads

__all__ = ["ModeResult", "Store", "UploadLimiter", "Uploads", "UploadsReport", "demo", "serve", "show"]
