"""The ``hardymer`` command line (typer): one thin command per API function and a few more."""
