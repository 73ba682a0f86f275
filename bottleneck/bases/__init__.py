"""Bases: the frozen ImageNet-pretrained networks features come from.

``registry`` is the table of named bases (add one here, or from your own code with
``register_base``); ``weights`` finds and verifies their weight files; ``build`` turns an
entry into a Keras model (preprocessing, cut layer, pooling). ``efficientnet_lite`` and
``pth`` build EfficientNet-Lite and read its PyTorch weights without PyTorch.
"""
