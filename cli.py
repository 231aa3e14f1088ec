"""Command-line entry points (filled in below)."""
import typer
trajdata = typer.Typer()
trajtok_app = typer.Typer()
def trajdata_main(): trajdata()
def trajtok_main(): trajtok_app()
