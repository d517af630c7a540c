"""The console: demo page, admin dashboards and health — the only code that reads every app."""
