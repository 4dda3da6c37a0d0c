"""Use cases between the doors (API routes, CLI commands, job handlers) and the database.

One module per family of use cases; each function loads, authorizes and acts, and leaves the commit to the
caller. Domain errors (core.errors) are raised here and mapped once per door."""
