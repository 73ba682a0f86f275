"""Experiments: training heads on cached features and comparing them.

``run`` plans and executes one run (``train``); ``grid`` runs bases x datasets x targets x
recipes x limits x seeds (``compare``); ``fitted`` is a finished run; ``segmentation`` and
``detection`` are the runs on cached feature maps (``two_stage``: detect, then classify); ``recipes`` are named bundles of accuracy settings; ``stacking``
puts features of several bases side by side; ``finetune`` goes beyond frozen features.
"""
