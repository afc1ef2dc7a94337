"""Evaluation set and report for the router's classification (``make eval-router``)."""
