"""augloop's command line (`augloop ...`), the top of the import ladder: it may use every package."""
