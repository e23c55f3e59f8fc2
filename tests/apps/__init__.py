"""Small applications that tests run with ``python -m kernel run tests.apps.MODULE:ATTR``."""
