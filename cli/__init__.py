"""Command-line layer of sipgrad (installed as the `sipgrad_cli` package and the `sipgrad` command)."""
