"""The recmtl command-line shell (Typer)."""
