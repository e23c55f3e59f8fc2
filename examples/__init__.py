"""Example apps that prove the design discussion's use cases on the public API only.

Each is a package runnable as ``python -m examples.NAME``: a self-driving demo that checks what it
claims and exits non-zero if a claim fails, plus a long-running mode to watch in the observer.
See ``examples/README.md``.
"""
