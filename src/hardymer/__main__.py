"""``python -m hardymer ...`` = the ``hardymer`` command; ``torchrun -m hardymer train ...``
starts it once per process (docs/scale.md)."""
from hardymer.cli.main import app

if __name__ == "__main__":
    app(prog_name="hardymer")
