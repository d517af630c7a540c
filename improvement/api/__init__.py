"""The improvement app's HTTP API: runs (``runs``) and user forgetting (``users``)."""
