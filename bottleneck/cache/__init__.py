"""The feature cache: content-addressed, checksummed, resumable HDF5 files.

``store`` writes and reads pooled-feature files (and the format every cache file shares:
settings, checksums, locks, resumable partial runs); ``maps`` reads feature-map files
lazily; ``labpickle`` reads and writes the classic lab's pickles of features.
"""
