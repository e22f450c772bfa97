"""Entry point: ``python -m arith_svc --op add|sub [options]`` (see config.py)."""

import os
import sys

from .config import parse_settings
from .server import ArithServer


def main(argv=None) -> None:
    settings = parse_settings(argv, os.environ)
    ArithServer(settings).run()


if __name__ == "__main__":
    main(sys.argv[1:])
