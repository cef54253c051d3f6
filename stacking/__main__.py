import sys

from stacking.cli import main

sys.exit(main())
