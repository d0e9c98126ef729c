"""rltransfer."""
