import sys

from nkstream.cli import main

sys.exit(main())
