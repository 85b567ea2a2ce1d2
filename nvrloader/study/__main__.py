"""Entry point of `python -m nvrloader.study`."""
import sys

from nvrloader.study.cli import main

sys.exit(main())
