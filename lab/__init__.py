"""The lab: lessons on transfer learning that run on this project, offline (see lab/README.md)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
