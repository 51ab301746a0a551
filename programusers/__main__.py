import sys

from programusers.cli import main

sys.exit(main())
