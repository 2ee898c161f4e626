"""Data: raw readers, the shared prepare pipeline, and the prepared-directory store."""
