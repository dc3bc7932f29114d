"""Command-line interface (typer); heavy imports happen inside commands."""
