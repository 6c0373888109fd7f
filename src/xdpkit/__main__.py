import sys

from xdpkit.cli.main import main

sys.exit(main())
