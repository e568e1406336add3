import sys

from metaphys.cli import main

sys.exit(main())
