"""Learn: the heads trained on cached features.

``heads`` are scikit-learn estimators (dense, mlp, logreg, ridge; add one with
``register_head``); ``semi`` the semi-supervised heads; ``decoder`` is the segmentation decoder and its
lazy batches; ``detector`` the one-stage detector (anchors, matching, focal loss, NMS) and its windows.
"""
