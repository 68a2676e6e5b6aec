"""The model as a server: FastAPI app (`app`), the ``/ws`` protocol (`protocol`, `ws`), `freeze-omni serve` (`cli`).

Importing this package is cheap (no torch, no FastAPI); import the submodules for the code.
"""
