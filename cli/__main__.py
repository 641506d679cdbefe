import sys

from sipgrad_cli.main import main

sys.exit(main())
