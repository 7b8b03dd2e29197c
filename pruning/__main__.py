import sys

from pruning.cli import main

sys.exit(main())
