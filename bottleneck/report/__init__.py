"""Report: what a grid leaves behind, for people to read.

``results`` keeps each finished run's row in a results folder and makes the tables;
``plots`` draws the pictures; ``html`` writes report.html from a results folder.
"""
