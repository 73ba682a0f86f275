"""Core: what every other room may use, and which imports nothing of the package.

Errors, tasks and their metrics, boxes and COCO's detection scores, seeded sampling, determinism, the restricted unpickler,
fault injection for tests, default paths, process and file helpers.
"""
