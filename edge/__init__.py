"""Edge pipeline for privacy-compliant intersection traffic cameras."""

__version__ = "0.1.0"
