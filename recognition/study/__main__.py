import sys

from recognition.study.cli import main

sys.exit(main())
