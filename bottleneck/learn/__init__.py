"""Learn: the heads trained on cached features.

``heads`` are scikit-learn estimators (dense, mlp, logreg, ridge; add one with
``register_head``); ``decoder`` is the segmentation decoder and its lazy batches.
"""
