"""Notification channels: one small adapter per destination, behind ``Channel``."""
