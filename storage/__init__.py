"""The database and the raw-message archive."""
