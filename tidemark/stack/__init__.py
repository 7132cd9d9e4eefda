"""The one-machine stack: settings, the embedded PostgreSQL server, databases and roles."""
