"""Operator tools: the demo traffic simulator and live view."""
