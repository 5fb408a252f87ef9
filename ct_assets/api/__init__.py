"""The HTTP API (`ct-assets api`): ingestion, health, metrics. Imported only by the CLI."""
