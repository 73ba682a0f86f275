"""Deploy: the model someone picked from a table, as one file, and predictions with it.

``export`` writes a ``.keras`` file that loads without this package (base, preprocessing
and head in one model); ``predict`` runs it over new images.
"""
