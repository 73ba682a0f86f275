"""Extraction: stage 1, running a frozen base over images once and caching what it gives.

``plan`` decides what a run makes (the pooled-feature product, ``PooledFeatures``) without
running anything; ``maps`` plans the feature-map product for dense prediction
(``FeatureMaps``); ``run`` makes the file; ``model`` builds the model a run needs, once per
process; ``feed`` decodes images ahead of the model in threads or worker processes;
``forward`` keeps a GPU busy; ``views`` makes seeded augmented views; ``ray_engine`` runs
chunks on a Ray cluster (optional).
"""
