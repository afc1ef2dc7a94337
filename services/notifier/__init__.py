"""notifier: pushes escalations to second-line staff over configured channels, once."""
