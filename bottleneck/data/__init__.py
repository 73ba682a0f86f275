"""Data: images and what is predicted about them.

``sources`` holds what every reader returns (``Dataset``, ``Split``, ``FileSource``,
``ArraySource``); ``datasets`` finds named datasets and reads their layouts (add a format
with ``register_format``, a named dataset with ``register_dataset``); ``csvdata`` reads
CSV targets; ``targets`` are what a head predicts (class, attributes, box, segmentation);
``labelmaps`` reads segmentation label maps; ``detection`` reads boxes (GTSDB, COCO
JSON, YOLO); ``images`` decodes and resizes; ``content``
hashes image files.
"""
