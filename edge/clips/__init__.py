"""Event clips: anonymising (redaction) and encryption at rest, before a clip reaches the disk."""
