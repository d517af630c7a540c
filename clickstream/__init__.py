"""Search sessions, shown results and events: the clickstream."""
