import sys

from extauthz_server.cli import main

sys.exit(main())
