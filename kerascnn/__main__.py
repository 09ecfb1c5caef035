"""Allow ``python -m kerascnn``."""

from kerascnn.cli import main

if __name__ == "__main__":
    main(prog_name="kerascnn")
