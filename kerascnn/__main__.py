"""Allow ``python -m kerascnn``."""

from kerascnn.cli import run

if __name__ == "__main__":
    run()
